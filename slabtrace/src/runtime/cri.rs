//! A small, synchronous client of the Kubernetes CRI v1 runtime service: which pod sandboxes and
//! containers the node's runtime (containerd, CRI-O, cri-dockerd) runs, with their names.
//!
//! The rest of slabtrace is synchronous, so [`CriClient`] hides gRPC behind a current-thread
//! tokio runtime of its own; every call is bounded by [`TIMEOUT`] so a hung runtime cannot stall
//! a report. Only read-only calls are made (`Version`, `ListPodSandbox`, `ListContainers`).
//! Turning the answers into [`PodInfo`] and [`ContainerInfo`] is pure ([`pod_info`],
//! [`container_info`]) and falls back from the CRI metadata to the labels kubelet sets, because
//! runtimes fill one or the other depending on who created the sandbox.

use std::{
    collections::HashMap,
    error::Error as _,
    future::Future,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    Container, ListContainersRequest, ListPodSandboxRequest, PodSandbox, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long connecting, and then each call, may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Where runtimes listen by default, in the order [`CriClient::detect`] tries them.
pub const DEFAULT_SOCKETS: [&str; 7] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/cri-dockerd.sock",
    // k3s and RKE2 run their own containerd.
    "/run/k3s/containerd/containerd.sock",
    // MicroK8s.
    "/var/snap/microk8s/common/run/containerd.sock",
];

/// The labels kubelet puts on every sandbox and container it creates.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// See [`LABEL_POD_UID`].
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// See [`LABEL_POD_UID`].
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// See [`LABEL_POD_UID`].
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The CRI API version slabtrace speaks, sent with `Version`.
const API_VERSION: &str = "v1";

/// The largest answer taken from the runtime: the kubelet's limit (16 MiB).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// What went wrong talking to the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// Nothing answers on the socket (or not in time).
    #[error(
        "cannot reach the container runtime at {}: {source}; pod names will come from cgroup \
         paths only (pass --cri-socket if the runtime listens elsewhere)",
        socket.display()
    )]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// Why it failed.
        #[source]
        source: ConnectError,
    },
    /// The runtime answered a call with an error, or not in time.
    #[error(
        "the container runtime at {} failed {what}: {} ({:?}); pod names will come from cgroup \
         paths only",
        socket.display(),
        status.message(),
        status.code()
    )]
    Call {
        /// The runtime's socket.
        socket: PathBuf,
        /// The CRI method called.
        what: &'static str,
        /// The gRPC status the call ended with.
        #[source]
        status: tonic::Status,
    },
    /// None of the [`DEFAULT_SOCKETS`] exists.
    #[error(
        "found no container runtime socket (tried {}); pod names will come from cgroup paths \
         only (pass --cri-socket if the runtime listens elsewhere)",
        list(tried)
    )]
    NotFound {
        /// The sockets looked for.
        tried: Vec<PathBuf>,
    },
    /// The client's own async runtime could not be built (out of file descriptors, usually).
    #[error("cannot start the CRI client's async runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// Why connecting to a runtime socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Opening the unix socket failed: missing, refused, no permission.
    #[error(transparent)]
    Io(io::Error),
    /// The socket accepted but the HTTP/2 handshake did not finish within [`TIMEOUT`].
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    /// The gRPC transport failed for another reason.
    #[error("{}", chain(.0))]
    Transport(tonic::transport::Error),
}

/// A pod sandbox, as the runtime knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// The pod's uid (the `pod<uid>` of its cgroup path).
    pub uid: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The runtime's id of the sandbox.
    pub sandbox_id: String,
}

/// A container, as the runtime knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The runtime's container id (the last component of its cgroup path).
    pub id: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// The uid of the pod it belongs to; empty if the runtime does not say.
    pub pod_uid: String,
    /// The runtime's id of the pod's sandbox.
    pub pod_sandbox_id: String,
}

/// A connection to one runtime's CRI socket.
pub struct CriClient {
    // Declared before `runtime` so the channel is dropped while its runtime still exists.
    client: RuntimeServiceClient<Channel>,
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl CriClient {
    /// Connects to the runtime listening on `socket`, giving up after [`TIMEOUT`].
    pub fn connect(socket: &Path) -> Result<Self, CriError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(CriError::Runtime)?;
        let channel = runtime.block_on(connect_channel(socket, TIMEOUT))?;
        // The kubelet takes answers up to 16 MiB; tonic's default of 4 MiB would lose every name
        // on a node whose container listing is larger (many pods, long labels).
        let client = RuntimeServiceClient::new(channel)
            .max_decoding_message_size(MAX_ANSWER_BYTES)
            .max_encoding_message_size(MAX_ANSWER_BYTES);
        Ok(Self { client, socket: socket.to_owned(), runtime })
    }

    /// Connects to the first of [`DEFAULT_SOCKETS`] that exists and answers `Version`.
    pub fn detect() -> Result<Self, CriError> {
        let sockets: Vec<PathBuf> = DEFAULT_SOCKETS.iter().map(PathBuf::from).collect();
        Self::detect_among(&sockets)
    }

    /// Connects to the first of `sockets` that exists and answers `Version`. If some exist but
    /// none answers, the error is the first one's: it names the socket most likely meant.
    pub fn detect_among(sockets: &[PathBuf]) -> Result<Self, CriError> {
        let mut first_error = None;
        for socket in sockets.iter().filter(|s| s.exists()) {
            let answer = Self::connect(socket).and_then(|client| client.version().map(|_| client));
            match answer {
                Ok(client) => return Ok(client),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| CriError::NotFound { tried: sockets.to_vec() }))
    }

    /// The socket this client talks to.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime's name and version, e.g. `containerd v1.7.24`.
    pub fn version(&self) -> Result<String, CriError> {
        let request = VersionRequest { version: API_VERSION.to_owned() };
        let answer = self.call("Version", |mut c| async move { c.version(request).await })?;
        Ok(format!("{} {}", answer.runtime_name, answer.runtime_version))
    }

    /// Every pod sandbox the runtime has, ready or not: a sandbox that stopped may still own
    /// cgroups whose slab memory is live.
    pub fn pods(&self) -> Result<Vec<PodInfo>, CriError> {
        let request = ListPodSandboxRequest { filter: None };
        let answer =
            self.call("ListPodSandbox", |mut c| async move { c.list_pod_sandbox(request).await })?;
        Ok(answer.items.iter().map(pod_info).collect())
    }

    /// Every container the runtime has, running or exited. A container without the kubelet's
    /// pod uid label gets the uid of its sandbox, which costs one more call.
    pub fn containers(&self) -> Result<Vec<ContainerInfo>, CriError> {
        let request = ListContainersRequest { filter: None };
        let answer =
            self.call("ListContainers", |mut c| async move { c.list_containers(request).await })?;
        let mut containers: Vec<ContainerInfo> =
            answer.containers.iter().map(container_info).collect();
        if containers.iter().any(|c| c.pod_uid.is_empty()) {
            let uids: HashMap<String, String> =
                self.pods()?.into_iter().map(|p| (p.sandbox_id, p.uid)).collect();
            for c in containers.iter_mut().filter(|c| c.pod_uid.is_empty()) {
                if let Some(uid) = uids.get(&c.pod_sandbox_id) {
                    c.pod_uid.clone_from(uid);
                }
            }
        }
        Ok(containers)
    }

    /// Runs one unary call on the client's runtime, bounded by [`TIMEOUT`].
    fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, CriError>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        // The generated client needs `&mut self`; clones share the one channel.
        let client = self.client.clone();
        let answer = self.runtime.block_on(async move {
            match tokio::time::timeout(TIMEOUT, f(client)).await {
                Ok(answer) => answer,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {} s",
                    TIMEOUT.as_secs()
                ))),
            }
        });
        answer.map(tonic::Response::into_inner).map_err(|status| CriError::Call {
            socket: self.socket.clone(),
            what,
            status,
        })
    }
}

/// Opens a gRPC channel to the runtime on `socket`, giving up after [`TIMEOUT`]; every call on
/// it gets at most `call_timeout` (slabtrace's own lookups [`TIMEOUT`]). For callers that run
/// their own tokio runtime and need more of the CRI than [`CriClient`] offers (the integration
/// tests create pods and run workloads in them with it).
pub async fn connect_channel(socket: &Path, call_timeout: Duration) -> Result<Channel, CriError> {
    let path = socket.to_owned();
    // The URI is never dialled (the connector opens the unix socket); tonic needs a well-formed
    // http URI all the same, for the :authority header.
    let endpoint =
        Endpoint::from_static("http://localhost").connect_timeout(TIMEOUT).timeout(call_timeout);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    }));
    let connected = tokio::time::timeout(TIMEOUT, connect).await;
    let source = match connected {
        Ok(Ok(channel)) => return Ok(channel),
        Ok(Err(e)) => connect_error(e),
        Err(_) => ConnectError::Timeout,
    };
    Err(CriError::Connect { socket: socket.to_owned(), source })
}

/// Digs the I/O error out of tonic's wrapping: "No such file or directory" tells a user what to
/// do, "transport error" does not.
fn connect_error(e: tonic::transport::Error) -> ConnectError {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return ConnectError::Io(match io.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(io.kind(), io.to_string()),
            });
        }
        cause = c.source();
    }
    ConnectError::Transport(e)
}

/// An error and its causes, joined with ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Paths joined with ", ".
fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// `primary` unless empty, else the label `key`, else empty.
fn field_or_label(primary: Option<&str>, labels: &HashMap<String, String>, key: &str) -> String {
    match primary {
        Some(value) if !value.is_empty() => value.to_owned(),
        _ => labels.get(key).cloned().unwrap_or_default(),
    }
}

/// A sandbox's identity: the CRI metadata, else kubelet's labels.
#[must_use]
pub fn pod_info(sandbox: &PodSandbox) -> PodInfo {
    let meta = sandbox.metadata.as_ref();
    let labels = &sandbox.labels;
    PodInfo {
        uid: field_or_label(meta.map(|m| m.uid.as_str()), labels, LABEL_POD_UID),
        namespace: field_or_label(meta.map(|m| m.namespace.as_str()), labels, LABEL_POD_NAMESPACE),
        name: field_or_label(meta.map(|m| m.name.as_str()), labels, LABEL_POD_NAME),
        sandbox_id: sandbox.id.clone(),
    }
}

/// A container's identity: the name from the CRI metadata (else kubelet's label), the pod uid
/// from kubelet's label (the CRI has no field for it).
#[must_use]
pub fn container_info(container: &Container) -> ContainerInfo {
    let labels = &container.labels;
    ContainerInfo {
        id: container.id.clone(),
        name: field_or_label(
            container.metadata.as_ref().map(|m| m.name.as_str()),
            labels,
            LABEL_CONTAINER_NAME,
        ),
        pod_uid: labels.get(LABEL_POD_UID).cloned().unwrap_or_default(),
        pod_sandbox_id: container.pod_sandbox_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerMetadata, PodSandboxMetadata};

    use super::*;

    /// A socket path for a fake runtime, in a directory of its own.
    fn fake_socket(tag: &str) -> (crate::testutil::TempDir, PathBuf) {
        let dir = crate::testutil::TempDir::new(tag);
        let socket = dir.path().join("cri.sock");
        (dir, socket)
    }

    #[test]
    fn a_listing_over_tonics_default_4_mib_is_read_whole() {
        use crate::runtime::fake_cri::{Behaviour, FakeRuntime};
        let (_dir, socket) = fake_socket("cri-large");
        // 3,000 containers with a 2 KiB label each: about 6 MiB, as a node with many pods and
        // long labels answers (tonic's default limit of 4 MiB lost every name).
        let behaviour = Behaviour { pods: 3000, padding: 2048, hang: false };
        let _runtime = FakeRuntime::start(&socket, behaviour);
        let client = CriClient::connect(&socket).unwrap();
        assert_eq!(client.version().unwrap(), "fake 1");
        let containers = client.containers().unwrap();
        assert_eq!(containers.len(), 3000);
        assert!(containers.iter().all(|c| c.pod_uid.starts_with("uid-")));
        assert_eq!(client.pods().unwrap().len(), 3000);
    }

    #[test]
    fn a_hung_runtime_is_an_error_not_a_hang() {
        use crate::runtime::fake_cri::{Behaviour, FakeRuntime};
        let (_dir, socket) = fake_socket("cri-hung");
        let _runtime = FakeRuntime::start(&socket, Behaviour { pods: 1, padding: 0, hang: true });
        let client = CriClient::connect(&socket).unwrap();
        // Each call gives up at its deadline (ours or the channel's, whichever fires first)
        // and says which call failed.
        let err = client.pods().unwrap_err().to_string();
        assert!(err.contains("failed ListPodSandbox"), "{err}");
        let err = client.containers().unwrap_err().to_string();
        assert!(err.contains("failed ListContainers"), "{err}");
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn sandbox(meta: Option<(&str, &str, &str)>, label_pairs: &[(&str, &str)]) -> PodSandbox {
        PodSandbox {
            id: "sb1".to_owned(),
            metadata: meta.map(|(uid, namespace, name)| PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            labels: labels(label_pairs),
            ..PodSandbox::default()
        }
    }

    fn container(name: Option<&str>, label_pairs: &[(&str, &str)]) -> Container {
        Container {
            id: "c1".to_owned(),
            pod_sandbox_id: "sb1".to_owned(),
            metadata: name.map(|n| ContainerMetadata { name: n.to_owned(), attempt: 0 }),
            labels: labels(label_pairs),
            ..Container::default()
        }
    }

    const KUBELET_POD_LABELS: [(&str, &str); 3] = [
        (LABEL_POD_UID, "label-uid"),
        (LABEL_POD_NAMESPACE, "label-ns"),
        (LABEL_POD_NAME, "label-name"),
    ];

    #[test]
    fn pod_from_metadata_wins_over_labels() {
        let p = pod_info(&sandbox(Some(("u1", "ns", "web")), &KUBELET_POD_LABELS));
        let want = PodInfo {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "web".into(),
            sandbox_id: "sb1".into(),
        };
        assert_eq!(p, want);
    }

    #[test]
    fn pod_without_metadata_uses_labels() {
        let p = pod_info(&sandbox(None, &KUBELET_POD_LABELS));
        assert_eq!(
            (p.uid.as_str(), p.namespace.as_str(), p.name.as_str()),
            ("label-uid", "label-ns", "label-name")
        );
    }

    #[test]
    fn pod_with_partly_empty_metadata_fills_each_field_from_labels() {
        let p = pod_info(&sandbox(Some(("u1", "", "")), &KUBELET_POD_LABELS));
        assert_eq!(
            (p.uid.as_str(), p.namespace.as_str(), p.name.as_str()),
            ("u1", "label-ns", "label-name")
        );
    }

    #[test]
    fn pod_with_neither_is_empty_not_an_error() {
        let p = pod_info(&sandbox(None, &[]));
        assert_eq!(
            p,
            PodInfo {
                uid: String::new(),
                namespace: String::new(),
                name: String::new(),
                sandbox_id: "sb1".into()
            }
        );
    }

    #[test]
    fn container_name_from_metadata_then_label() {
        let labelled = [(LABEL_CONTAINER_NAME, "from-label"), (LABEL_POD_UID, "u1")];
        assert_eq!(container_info(&container(Some("worker"), &labelled)).name, "worker");
        assert_eq!(container_info(&container(Some(""), &labelled)).name, "from-label");
        assert_eq!(container_info(&container(None, &labelled)).name, "from-label");
        assert_eq!(container_info(&container(None, &[])).name, "");
    }

    #[test]
    fn container_pod_uid_from_label() {
        let c = container_info(&container(Some("worker"), &[(LABEL_POD_UID, "u1")]));
        assert_eq!(
            c,
            ContainerInfo {
                id: "c1".into(),
                name: "worker".into(),
                pod_uid: "u1".into(),
                pod_sandbox_id: "sb1".into()
            }
        );
        assert_eq!(container_info(&container(Some("worker"), &[])).pod_uid, "");
    }

    #[test]
    fn missing_socket_is_one_sentence_naming_the_socket_and_the_cause() {
        let socket = Path::new("/nonexistent/slabtrace-test/cri.sock");
        let err = CriClient::connect(socket).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CriError::Connect { source: ConnectError::Io(_), .. }), "{err:?}");
        assert_eq!(
            text,
            "cannot reach the container runtime at /nonexistent/slabtrace-test/cri.sock: No such \
             file or directory (os error 2); pod names will come from cgroup paths only (pass \
             --cri-socket if the runtime listens elsewhere)"
        );
    }

    #[test]
    fn detect_among_nothing_says_what_it_tried() {
        let tried =
            vec![PathBuf::from("/nonexistent/a.sock"), PathBuf::from("/nonexistent/b.sock")];
        let err = CriClient::detect_among(&tried).unwrap_err();
        assert!(
            err.to_string().contains("tried /nonexistent/a.sock, /nonexistent/b.sock"),
            "{err}"
        );
    }
}
