//! Empty on purpose: the library target lets `slabtrace` name this crate as a build
//! dependency, so cargo rebuilds slabtrace when the BPF programs change.
#![no_std]
