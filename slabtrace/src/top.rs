//! `slabtrace top`: a live view like slabtop. (Being written.)

use crate::{cli::TopArgs, session::TraceError};

/// `slabtrace top`.
pub fn run(_args: &TopArgs) -> Result<(), TraceError> {
    Err(TraceError::Usage("slabtrace top is not built yet".to_owned()))
}
