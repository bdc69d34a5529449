//! deploy/: what a cluster is given is valid and keeps slabtrace's least privilege.
//!
//! - Every object of every manifest, and of the Helm chart rendered by Helm's own engine
//!   (tests/src/helm.rs) with its default values and with overrides, goes through the Kubernetes API's own types
//!   (k8s-openapi, v1.33) and back: a misspelled or unknown field is dropped on the way, so
//!   the round trip catches it. The kinds k8s-openapi lacks (`ServiceMonitor`,
//!   `Kustomization`, `KubeletConfiguration`) go through strict types of our own.
//! - The `DaemonSet` is not privileged, keeps exactly `CAP_BPF`, `CAP_PERFMON` and
//!   `CAP_SYSLOG`, and mounts every host path read-only except one directory of the BPF
//!   filesystem (the pins), mounted outside /sys; the chart's default pod spec is the plain
//!   manifest's.
//! - The kubelet snippet has the keys `slabtrace advise` prints.
//! - Every metric the Grafana dashboard queries is one a real daemon exports (root), or, for
//!   the families written only after an event, one slabtrace lists in `metrics::FAMILIES`.
//! - The Vector config (deploy/vector) selects slabtrace's pods, and its remap program, run by
//!   VRL's own compiler and runtime (tests/src/vrl.rs), ships every event a real daemon wrote
//!   whole and drops its log lines (root).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Namespace, PodSpec, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use slabtrace::output::metrics::FAMILIES;
use slabtrace_integration::{
    Cgroup, Tmpfs,
    daemon::Daemon,
    fresh_uid,
    helm::{self, Release},
    memcg::{Memcg, ensure_killed},
    prometheus::{Prometheus, sample_value},
    require_root,
    vrl::{self, Outcome},
    workload,
};

/// The workspace's version: the image tag and the chart's appVersion.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The capabilities the daemon keeps (README "Least privilege").
const CAPS: [&str; 3] = ["BPF", "PERFMON", "SYSLOG"];

/// The host's BPF filesystem: the one host path mounted read-write is a directory in it, where
/// the maps are pinned, never the whole of it (other agents' pins).
const BPFFS: &str = "/sys/fs/bpf/";

/// The pins' host directory and where the container sees it (outside /sys: the runtimes'
/// default `AppArmor` profile denies writes under /sys/fs/).
const PINS: (&str, &str) = ("/sys/fs/bpf/slabtrace", "/var/lib/slabtrace/pins");

/// The history's host directory (slabtrace's own, never a parent of others') and where the
/// container sees it.
const STATE: (&str, &str) = ("/var/lib/slabtrace", "/var/lib/slabtrace/state");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> Result<String> {
    let path = repo().join(relative);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every document of a multi-document YAML text, empty ones left out.
fn documents(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The first place two JSON values differ, as a path, for a readable failure.
fn first_difference(path: &str, before: &Value, after: &Value) -> Option<String> {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            keys.into_iter().find_map(|k| {
                let at = format!("{path}.{k}");
                match (old.get(k), new.get(k)) {
                    (Some(was), Some(is)) => first_difference(&at, was, is),
                    (Some(was), None) => Some(format!("{at}: {was} is lost (unknown field?)")),
                    (None, Some(is)) => Some(format!("{at}: {is} appears")),
                    (None, None) => None,
                }
            })
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => old
            .iter()
            .zip(new)
            .enumerate()
            .find_map(|(i, (was, is))| first_difference(&format!("{path}[{i}]"), was, is)),
        _ => (before != after).then(|| format!("{path}: {before} became {after}")),
    }
}

/// Deserializes `obj` as `T` and serializes it back: equal only if every field is one `T`
/// knows, spelled and typed as it expects.
fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<T> {
    let typed: T = serde_json::from_value(obj.clone())?;
    let back = serde_json::to_value(&typed)?;
    if let Some(diff) = first_difference("", obj, &back) {
        bail!("does not survive the round trip through its API type: {diff}");
    }
    Ok(typed)
}

// The kinds k8s-openapi does not have, as strict as their CRD or config type: only the fields
// the manifests use, unknown ones refused.

/// `monitoring.coreos.com/v1` `ServiceMonitor` (Prometheus Operator).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: LabelSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_selector: Option<NamespaceSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_label: Option<String>,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    any: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    match_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    honor_labels: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relabelings: Option<Vec<RelabelConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric_relabelings: Option<Vec<RelabelConfig>>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RelabelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    source_labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    separator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<String>,
}

/// `monitoring.coreos.com/v1` `PodMonitor` (Prometheus Operator).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodMonitor {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: PodMonitorSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodMonitorSpec {
    selector: LabelSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_selector: Option<NamespaceSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_label: Option<String>,
    /// The same fields as a `ServiceMonitor`'s endpoints, for those the manifests use.
    pod_metrics_endpoints: Vec<Endpoint>,
}

/// `monitoring.coreos.com/v1` `PrometheusRule` (Prometheus Operator): its groups are checked
/// by promtool, so they stay a JSON value here.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: PrometheusRuleSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PrometheusRuleSpec {
    groups: Value,
}

/// `kustomize.config.k8s.io/v1beta1` `Kustomization`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    resources: Vec<String>,
}

/// `kubelet.config.k8s.io/v1beta1` `KubeletConfiguration`: the fields `slabtrace advise` sets.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_reserved: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kube_reserved: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eviction_hard: Option<BTreeMap<String, String>>,
}

/// The objects of one manifest file, each checked against its kind's type.
#[derive(Default)]
struct Objects {
    daemonsets: Vec<DaemonSet>,
    services: Vec<Service>,
    service_monitors: Vec<ServiceMonitor>,
    pod_monitors: Vec<PodMonitor>,
    prometheus_rules: Vec<PrometheusRule>,
    config_maps: Vec<ConfigMap>,
    network_policies: Vec<NetworkPolicy>,
    kinds: Vec<String>,
}

fn check_objects(source: &str, text: &str, objects: &mut Objects) -> Result<()> {
    let docs = documents(text).with_context(|| format!("{source} is not YAML"))?;
    ensure!(!docs.is_empty(), "{source} has no object");
    for obj in &docs {
        let api = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let what = format!("{source}: {api} {kind} {}", obj["metadata"]["name"]);
        let checked: Result<()> = (|| {
            match (api, kind) {
                ("v1", "Namespace") => {
                    let _: Namespace = round_trip(obj)?;
                }
                ("v1", "ServiceAccount") => {
                    let _: ServiceAccount = round_trip(obj)?;
                }
                ("v1", "Service") => objects.services.push(round_trip(obj)?),
                ("v1", "ConfigMap") => objects.config_maps.push(round_trip(obj)?),
                ("apps/v1", "DaemonSet") => objects.daemonsets.push(round_trip(obj)?),
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    objects.network_policies.push(round_trip(obj)?);
                }
                ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                    objects.service_monitors.push(round_trip(obj)?);
                }
                ("monitoring.coreos.com/v1", "PrometheusRule") => {
                    objects.prometheus_rules.push(round_trip(obj)?);
                }
                ("monitoring.coreos.com/v1", "PodMonitor") => {
                    objects.pod_monitors.push(round_trip(obj)?);
                }
                ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
                    {
                        let _: Kustomization = round_trip(obj)?;
                    };
                }
                ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration") => {
                    {
                        let _: KubeletConfiguration = round_trip(obj)?;
                    };
                }
                _ => bail!("a kind this test does not know: add its type"),
            }
            Ok(())
        })();
        checked.with_context(|| what.clone())?;
        objects.kinds.push(kind.to_owned());
    }
    Ok(())
}

/// Every .yaml file under `dir`, relative to the repository.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The pod spec's security: what README "Least privilege" promises.
fn check_least_privilege(what: &str, ds: &DaemonSet) -> Result<()> {
    let spec = ds.spec.as_ref().context("no spec")?;
    let strategy = spec.update_strategy.as_ref().context("no updateStrategy")?;
    let rolling = strategy.rolling_update.as_ref().context("no rollingUpdate")?;
    // One daemon per pin directory: the old pod stops before the new one starts.
    ensure!(
        serde_json::to_value(&rolling.max_surge)? == json!(0)
            && serde_json::to_value(&rolling.max_unavailable)? == json!(1),
        "{what}: updateStrategy must be maxSurge 0, maxUnavailable 1: {rolling:?}"
    );
    let pod = spec.template.spec.as_ref().context("no pod spec")?;
    ensure!(pod.host_pid != Some(true), "{what}: hostPID");
    ensure!(pod.host_network != Some(true), "{what}: hostNetwork");
    ensure!(pod.host_ipc != Some(true), "{what}: hostIPC");
    ensure!(pod.automount_service_account_token == Some(false), "{what}: a mounted token");
    ensure!(pod.init_containers.is_none(), "{what}: init containers are not checked here");
    let host_paths: BTreeMap<&str, &str> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.as_str(), v.host_path.as_ref()?.path.as_str())))
        .collect();
    ensure!(
        !host_paths.values().any(|p| *p == "/proc" || p.starts_with("/proc/") || *p == "/"),
        "{what}: the host's /proc (or /) is mounted: {host_paths:?}"
    );
    for c in &pod.containers {
        let what = format!("{what}: container {}", c.name);
        let sc =
            c.security_context.as_ref().with_context(|| format!("{what}: no securityContext"))?;
        ensure!(sc.privileged != Some(true), "{what}: privileged");
        ensure!(sc.allow_privilege_escalation == Some(false), "{what}: privilege escalation");
        ensure!(sc.read_only_root_filesystem == Some(true), "{what}: writable root filesystem");
        ensure!(sc.run_as_user == Some(0), "{what}: runAsUser must be 0 (see the comment)");
        let caps = sc.capabilities.as_ref().with_context(|| format!("{what}: no capabilities"))?;
        ensure!(caps.drop == Some(vec!["ALL".to_owned()]), "{what}: must drop ALL: {caps:?}");
        let mut added = caps.add.clone().unwrap_or_default();
        added.sort();
        ensure!(added == CAPS, "{what}: must add exactly {CAPS:?}, adds {added:?}");
        let seccomp = sc.seccomp_profile.as_ref().with_context(|| format!("{what}: no seccomp"))?;
        ensure!(seccomp.type_ == "RuntimeDefault", "{what}: seccomp {seccomp:?}");
        let mut writable = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(host) = host_paths.get(m.name.as_str()) else { continue };
            if m.read_only != Some(true) {
                // slabtrace's own history directory, or a directory of the BPF filesystem.
                if (*host, m.mount_path.as_str()) == STATE {
                    writable.push(*host);
                    continue;
                }
                ensure!(
                    host.starts_with(BPFFS) && host.len() > BPFFS.len(),
                    "{what}: host path {host} is writable; only a directory under {BPFFS} or \
                     {} may be",
                    STATE.0
                );
                ensure!(
                    !m.mount_path.starts_with("/sys/"),
                    "{what}: the pins are mounted at {} under /sys, where the default AppArmor \
                     profile denies writes",
                    m.mount_path
                );
                writable.push(*host);
            }
        }
        ensure!(
            writable.len() <= 2,
            "{what}: more than the pins and the history writable: {writable:?}"
        );
    }
    Ok(())
}

/// The writable host path of the pod's first container mounted as `volume`, and where.
fn writable_mount<'a>(pod: &'a PodSpec, volume: &str) -> Option<(&'a str, &'a str)> {
    let c = pod.containers.first()?;
    let m =
        c.volume_mounts.iter().flatten().find(|m| m.read_only != Some(true) && m.name == volume)?;
    let v = pod.volumes.iter().flatten().find(|v| v.name == m.name)?;
    Some((v.host_path.as_ref()?.path.as_str(), m.mount_path.as_str()))
}

/// Where the pins are: the host directory and the container's, if mounted.
fn pins_mount(pod: &PodSpec) -> Option<(&str, &str)> {
    writable_mount(pod, "pins")
}

/// What the plain manifest and the chart's default rendering must both say.
fn check_daemon_settings(what: &str, ds: &DaemonSet, image: &str) -> Result<()> {
    let template = &ds.spec.as_ref().context("no spec")?.template;
    let pod = template.spec.as_ref().context("no pod spec")?;
    let c = pod.containers.first().context("no container")?;
    ensure!(c.image.as_deref() == Some(image), "{what}: image {:?}, not {image}", c.image);
    let args = c.args.clone().unwrap_or_default();
    ensure!(
        args.starts_with(&["daemon".into(), "--listen".into(), "0.0.0.0:9477".into()]),
        "{what}: args {args:?}"
    );
    let env: BTreeMap<&str, Value> = c
        .env
        .iter()
        .flatten()
        .map(|e| Ok((e.name.as_str(), serde_json::to_value(e)?)))
        .collect::<Result<_>>()?;
    ensure!(
        env.get("NODE_NAME").map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"])
            == Some(&json!("spec.nodeName")),
        "{what}: NODE_NAME must come from spec.nodeName"
    );
    for (name, value) in [
        ("SLABTRACE_INTERVAL", "10s"),
        ("SLABTRACE_PIN_PATH", PINS.1),
        ("SLABTRACE_HISTORY_FILE", "/var/lib/slabtrace/state/history.json"),
        ("SLABTRACE_CRI_SOCKET", "/run/containerd/containerd.sock"),
        ("SLABTRACE_REPORT_LISTEN", "127.0.0.1:9478"),
    ] {
        ensure!(env.get(name).map(|e| &e["value"]) == Some(&json!(value)), "{what}: {name}");
    }
    ensure!(
        pins_mount(pod) == Some(PINS),
        "{what}: pins mounted {:?}, not {PINS:?}",
        pins_mount(pod)
    );
    ensure!(
        writable_mount(pod, "state") == Some(STATE),
        "{what}: the history mounted {:?}, not {STATE:?}",
        writable_mount(pod, "state")
    );
    let port = c.ports.iter().flatten().find(|p| p.name.as_deref() == Some("metrics"));
    ensure!(port.map(|p| p.container_port) == Some(9477), "{what}: no port 9477 named metrics");
    for probe in [&c.liveness_probe, &c.readiness_probe] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref());
        ensure!(get.and_then(|g| g.path.as_deref()) == Some("/healthz"), "{what}: probe {get:?}");
    }
    let annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone());
    let annotations = annotations.unwrap_or_default();
    for (k, v) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "9477"),
        ("prometheus.io/path", "/metrics"),
    ] {
        ensure!(annotations.get(k).map(String::as_str) == Some(v), "{what}: annotation {k}");
    }
    ensure!(
        pod.tolerations.iter().flatten().any(|t| t.operator.as_deref() == Some("Exists")
            && t.key.is_none()
            && t.effect.is_none()),
        "{what}: must tolerate every taint"
    );
    ensure!(pod.priority_class_name.as_deref() == Some("system-node-critical"), "{what}");
    let resources = c.resources.as_ref().context("no resources")?;
    let limits = resources.limits.clone().unwrap_or_default();
    ensure!(limits.contains_key("memory") && !limits.contains_key("cpu"), "{what}: limits");
    Ok(())
}

fn plain_daemonset() -> Result<DaemonSet> {
    let mut objects = Objects::default();
    check_objects("daemonset.yaml", &read("deploy/kubernetes/daemonset.yaml")?, &mut objects)?;
    objects.daemonsets.pop().context("no DaemonSet in deploy/kubernetes/daemonset.yaml")
}

#[test]
fn every_manifest_is_valid_kubernetes() -> Result<()> {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy/kubernetes"), &mut files)?;
    files.push(repo().join("deploy/kubelet-reservations.yaml"));
    files.sort();
    let mut kinds = BTreeSet::new();
    for path in &files {
        let text = fs::read_to_string(path)?;
        let mut objects = Objects::default();
        check_objects(&path.display().to_string(), &text, &mut objects)?;
        for ds in &objects.daemonsets {
            check_least_privilege(&path.display().to_string(), ds)?;
        }
        kinds.extend(objects.kinds);
    }
    let want = [
        "DaemonSet",
        "KubeletConfiguration",
        "Kustomization",
        "Namespace",
        "NetworkPolicy",
        "PodMonitor",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ];
    ensure!(kinds.iter().eq(want.iter()), "kinds {kinds:?}, want {want:?}");
    let mut monitors = Objects::default();
    for path in [
        "deploy/kubernetes/optional/servicemonitor.yaml",
        "deploy/kubernetes/optional/podmonitor.yaml",
    ] {
        check_objects(path, &read(path)?, &mut monitors)?;
    }
    let sm = monitors.service_monitors.first().context("no ServiceMonitor")?;
    ensure!(sm.spec.endpoints.iter().all(|e| e.honor_labels == Some(true)), "honorLabels: {sm:?}");
    // The PodMonitor scrapes the same pods the same way, with no Service in between.
    let pm = monitors.pod_monitors.first().context("no PodMonitor")?;
    ensure!(pm.spec.pod_metrics_endpoints == sm.spec.endpoints, "{pm:?}\n{sm:?}");
    ensure!(pm.spec.selector == sm.spec.selector, "selectors differ: {pm:?}\n{sm:?}");
    Ok(())
}

#[test]
fn the_network_policy_admits_only_the_metrics_port_of_slabtraces_pods() -> Result<()> {
    let mut objects = Objects::default();
    let path = "deploy/kubernetes/optional/networkpolicy.yaml";
    check_objects(path, &read(path)?, &mut objects)?;
    let policy = objects.network_policies.first().context("no NetworkPolicy")?;
    let spec = policy.spec.as_ref().context("no spec")?;
    let ds = plain_daemonset()?;
    let pod_labels = ds.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.labels.clone());
    let pod_labels = pod_labels.unwrap_or_default();
    let selected =
        spec.pod_selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
    ensure!(
        !selected.is_empty() && selected.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the policy selects {selected:?}, the pods are {pod_labels:?}"
    );
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    let rules = spec.ingress.as_deref().unwrap_or_default();
    ensure!(rules.len() == 1, "{rules:?}");
    let ports = rules[0].ports.as_deref().unwrap_or_default();
    ensure!(
        ports.len() == 1
            && ports[0].port
                == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                    "metrics".into()
                )),
        "{ports:?}"
    );
    ensure!(rules[0].from.as_deref().is_some_and(|f| !f.is_empty()), "open to everyone");
    Ok(())
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_optional_ones() -> Result<()> {
    let k: Kustomization =
        round_trip(&documents(&read("deploy/kubernetes/kustomization.yaml")?)?[0])?;
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy/kubernetes"), &mut files)?;
    let dir = repo().join("deploy/kubernetes");
    let mut present: Vec<String> = files
        .iter()
        .filter_map(|p| p.strip_prefix(&dir).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p != "kustomization.yaml" && !p.starts_with("optional/"))
        .collect();
    present.sort();
    let mut listed = k.resources.clone();
    listed.sort();
    ensure!(listed == present, "kustomization lists {listed:?}; the directory has {present:?}");
    // Namespace first: the objects in it need it.
    ensure!(k.resources.first().map(String::as_str) == Some("namespace.yaml"), "{k:?}");
    Ok(())
}

#[test]
fn the_daemonset_keeps_least_privilege_and_the_documented_settings() -> Result<()> {
    let ds = plain_daemonset()?;
    check_least_privilege("deploy/kubernetes", &ds)?;
    check_daemon_settings("deploy/kubernetes", &ds, &format!("localhost/slabtrace:{VERSION}"))?;
    let meta = &ds.metadata;
    ensure!(meta.namespace.as_deref() == Some("slabtrace"), "namespace {:?}", meta.namespace);
    let pod = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).context("no pod spec")?;
    ensure!(pod.service_account_name.as_deref() == Some("slabtrace"), "serviceAccountName");
    // The headless Service selects exactly the DaemonSet's pods.
    let mut objects = Objects::default();
    check_objects("service.yaml", &read("deploy/kubernetes/service.yaml")?, &mut objects)?;
    let svc = objects.services.pop().context("no Service")?;
    let svc_spec = svc.spec.context("no Service spec")?;
    ensure!(svc_spec.cluster_ip.as_deref() == Some("None"), "the Service must be headless");
    let pod_labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in svc_spec.selector.iter().flatten() {
        ensure!(pod_labels.get(k) == Some(v), "the Service selects {k}={v}, the pods lack it");
    }
    Ok(())
}

fn release() -> Release {
    Release { name: "slabtrace".into(), namespace: "slabtrace".into() }
}

fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/slabtrace")
}

/// Renders the chart and checks every object; returns them.
fn render_chart(overrides: &Value) -> Result<(Objects, helm::Rendered)> {
    let rendered = helm::render(&chart_dir(), &release(), overrides)?;
    let mut objects = Objects::default();
    for (name, text) in &rendered.manifests {
        if documents(text)
            .with_context(|| format!("{name} rendered to bad YAML:\n{text}"))?
            .is_empty()
        {
            continue;
        }
        check_objects(name, text, &mut objects).with_context(|| format!("rendered:\n{text}"))?;
    }
    for ds in &objects.daemonsets {
        check_least_privilege("the chart", ds)?;
    }
    ensure!(rendered.notes.as_deref().is_some_and(|n| n.contains("kubectl")), "NOTES.txt");
    Ok((objects, rendered))
}

#[test]
fn the_chart_renders_the_plain_manifests_pod_spec() -> Result<()> {
    let chart: Value = documents(&read("deploy/helm/slabtrace/Chart.yaml")?)?.remove(0);
    ensure!(chart["apiVersion"] == "v2" && chart["appVersion"] == VERSION, "Chart.yaml {chart}");
    let (objects, _) = render_chart(&json!({}))?;
    let mut kinds = objects.kinds.clone();
    kinds.sort();
    ensure!(kinds == ["DaemonSet", "Service", "ServiceAccount"], "default kinds {kinds:?}");
    let ds = objects.daemonsets.first().context("no DaemonSet")?;
    check_daemon_settings("the chart", ds, &format!("localhost/slabtrace:{VERSION}"))?;
    let plain = plain_daemonset()?;
    let pod_spec = |d: &DaemonSet| -> Result<Value> {
        let spec: &PodSpec =
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).context("no pod spec")?;
        Ok(serde_json::to_value(spec)?)
    };
    let (chart_pod, plain_pod) = (pod_spec(ds)?, pod_spec(&plain)?);
    if let Some(diff) = first_difference("spec.template.spec", &plain_pod, &chart_pod) {
        bail!("the chart's default pod spec is not deploy/kubernetes's: {diff}");
    }
    let annotations = |d: &DaemonSet| {
        d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.annotations.clone())
    };
    ensure!(annotations(ds) == annotations(&plain), "pod annotations differ");
    let strategy = |d: &DaemonSet| serde_json::to_value(&d.spec.as_ref()?.update_strategy).ok();
    ensure!(strategy(ds) == strategy(&plain), "updateStrategy differs");
    // The Service selects the chart's pods.
    let svc = objects.services.first().context("no Service")?;
    let pod_labels = ds.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.labels.clone());
    let pod_labels = pod_labels.unwrap_or_default();
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    ensure!(!selector.is_empty(), "the Service selects nothing");
    for (k, v) in &selector {
        ensure!(pod_labels.get(k) == Some(v), "the Service selects {k}={v}; the pods lack it");
    }
    Ok(())
}

#[test]
fn the_chart_renders_overrides() -> Result<()> {
    let overrides = json!({
        "image": { "repository": "registry.example.com/infra/slabtrace", "tag": "9.9.9",
                   "pullPolicy": "Always" },
        "imagePullSecrets": [{ "name": "regcred" }],
        "serviceMonitor": { "enabled": true, "labels": { "release": "kube-prometheus-stack" } },
        "networkPolicy": { "enabled": true },
        "nodeSelector": { "kubernetes.io/os": "linux" },
        "tolerations": [
            { "operator": "Exists" },
            { "key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule" }
        ],
        "extraArgs": ["--metrics-top", "200", "--call-sites"],
        "env": [{ "name": "RUST_LOG", "value": "debug" }],
        "podAnnotations": { "example.com/team": "kernel" },
        "criSocket": "/run/crio/crio.sock",
        "listenPort": 9555,
    });
    let (objects, rendered) = render_chart(&overrides)?;
    ensure!(rendered.values["listenPort"] == 9555, "the overrides were not merged");
    let mut kinds = objects.kinds.clone();
    kinds.sort();
    ensure!(
        kinds == ["DaemonSet", "NetworkPolicy", "Service", "ServiceAccount", "ServiceMonitor"],
        "kinds {kinds:?}"
    );
    // The chart's policy admits what the plain manifest's does, to its own DaemonSet's pods.
    let policy = objects.network_policies.first().and_then(|p| p.spec.clone());
    let policy = policy.context("no NetworkPolicy")?;
    let mut plain = Objects::default();
    let path = "deploy/kubernetes/optional/networkpolicy.yaml";
    check_objects(path, &read(path)?, &mut plain)?;
    let plain = plain.network_policies.first().and_then(|p| p.spec.clone());
    let plain = plain.context("no plain NetworkPolicy")?;
    ensure!(
        (&policy.ingress, &policy.policy_types) == (&plain.ingress, &plain.policy_types),
        "chart {policy:?}\nplain {plain:?}"
    );
    let ds = objects.daemonsets.first().context("no DaemonSet")?;
    let selector = ds.spec.as_ref().map(|s| &s.selector.match_labels);
    ensure!(
        policy.pod_selector.as_ref().map(|s| &s.match_labels) == selector,
        "the chart's policy selects {:?}, its DaemonSet {selector:?}",
        policy.pod_selector
    );
    let ds = objects.daemonsets.first().context("no DaemonSet")?;
    let template = &ds.spec.as_ref().context("no spec")?.template;
    let pod = template.spec.as_ref().context("no pod spec")?;
    let c = &pod.containers[0];
    ensure!(c.image.as_deref() == Some("registry.example.com/infra/slabtrace:9.9.9"), "{c:?}");
    ensure!(c.image_pull_policy.as_deref() == Some("Always"), "pullPolicy");
    ensure!(pod.image_pull_secrets.as_ref().is_some_and(|s| s[0].name == "regcred"), "secrets");
    ensure!(
        pod.node_selector.as_ref().and_then(|n| n.get("kubernetes.io/os")).map(String::as_str)
            == Some("linux"),
        "nodeSelector {:?}",
        pod.node_selector
    );
    ensure!(pod.tolerations.as_ref().map(Vec::len) == Some(2), "tolerations {:?}", pod.tolerations);
    ensure!(
        c.args.as_ref().is_some_and(|a| a
            == &["daemon", "--listen", "0.0.0.0:9555", "--metrics-top", "200", "--call-sites"]),
        "args {:?}",
        c.args
    );
    ensure!(c.env.iter().flatten().any(|e| e.name == "RUST_LOG"), "extra env");
    ensure!(c.ports.as_ref().is_some_and(|p| p[0].container_port == 9555), "port");
    let annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone());
    let annotations = annotations.unwrap_or_default();
    ensure!(annotations.get("prometheus.io/port").map(String::as_str) == Some("9555"), "port");
    ensure!(annotations.contains_key("example.com/team"), "podAnnotations {annotations:?}");
    // The CRI socket's directory is what is mounted, read-only.
    let cri = pod.volumes.iter().flatten().find(|v| v.name == "cri").context("no cri volume")?;
    ensure!(cri.host_path.as_ref().is_some_and(|h| h.path == "/run/crio"), "{cri:?}");
    let sm = objects.service_monitors.first().context("no ServiceMonitor")?;
    ensure!(sm.spec.endpoints[0].port.as_deref() == Some("metrics"), "{sm:?}");
    // The pod families' namespace and pod labels survive the Prometheus Operator's target
    // labels only with honorLabels.
    ensure!(sm.spec.endpoints[0].honor_labels == Some(true), "honorLabels: {sm:?}");
    let sm_labels = sm.metadata.labels.clone().unwrap_or_default();
    ensure!(
        sm_labels.get("release").map(String::as_str) == Some("kube-prometheus-stack"),
        "labels"
    );
    let svc = objects.services.first().context("no Service")?;
    let port = svc.spec.as_ref().and_then(|s| s.ports.as_ref()?.first().map(|p| p.port));
    ensure!(port == Some(9555), "Service port {port:?}");
    Ok(())
}

/// The Kubernetes version the chart is linted for: k8s-openapi's, which the objects are typed
/// with.
const KUBE_VERSION: &str = "v1.33.0";

/// The value sets users flip, each linted and rendered by Helm (issue: a chart checked only
/// with its defaults broke on the first `--set`).
fn value_sets() -> Vec<(&'static str, Value)> {
    vec![
        ("the defaults", json!({})),
        (
            "a ServiceMonitor",
            json!({ "serviceMonitor": { "enabled": true,
            "labels": { "release": "kube-prometheus-stack" } } }),
        ),
        ("a PodMonitor", json!({ "podMonitor": { "enabled": true } })),
        (
            "a PrometheusRule",
            json!({ "prometheusRule": { "enabled": true,
            "labels": { "release": "kube-prometheus-stack" } } }),
        ),
        ("a NetworkPolicy", json!({ "networkPolicy": { "enabled": true } })),
        (
            "the dashboard",
            json!({ "grafanaDashboard": { "enabled": true, "namespace": "monitoring" } }),
        ),
        ("a custom pin path", json!({ "pinPath": "/sys/fs/bpf/infra/slabtrace" })),
        ("no pins", json!({ "pinPath": "off" })),
        ("no history file", json!({ "historyPath": "off" })),
        ("no priority class", json!({ "priorityClassName": "" })),
        (
            "another image",
            json!({ "image": { "repository": "registry.example.com/slabtrace",
            "tag": "9.9.9", "pullPolicy": "Always" }, "imagePullSecrets": [{ "name": "regcred" }] }),
        ),
        ("another name", json!({ "fullnameOverride": "kernel-slab" })),
    ]
}

#[test]
fn helm_lints_the_chart_strictly_for_every_value_set_users_flip() -> Result<()> {
    // Lint is not a no-op: values of the wrong shape are an error.
    let broken = helm::lint(&chart_dir(), "slabtrace", &json!({ "image": "x" }), KUBE_VERSION)?;
    ensure!(broken.iter().any(|m| m.severity > helm::WARNING), "a broken value set linted clean");
    for (what, values) in value_sets() {
        let found = helm::lint(&chart_dir(), "slabtrace", &values, KUBE_VERSION)
            .with_context(|| format!("linting {what}"))?;
        let bad: Vec<_> = found.iter().filter(|m| m.severity >= helm::WARNING).collect();
        ensure!(bad.is_empty(), "{what}: `helm lint --strict` says {bad:?}");
        let (objects, _) = render_chart(&values).with_context(|| format!("rendering {what}"))?;
        let ds = objects.daemonsets.first().with_context(|| format!("{what}: no DaemonSet"))?;
        let pod = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).context("no pod spec")?;
        let env = |name: &str| {
            pod.containers[0].env.iter().flatten().find(|e| e.name == name)?.value.clone()
        };
        // The pins: the host directory mounted writable, or nothing writable at all.
        match values["pinPath"].as_str().unwrap_or(PINS.0) {
            "off" => {
                ensure!(env("SLABTRACE_PIN_PATH").as_deref() == Some("off"), "{what}: pin path");
                ensure!(pins_mount(pod).is_none(), "{what}: mounts {:?}", pins_mount(pod));
            }
            host => {
                ensure!(env("SLABTRACE_PIN_PATH").as_deref() == Some(PINS.1), "{what}: pin path");
                ensure!(pins_mount(pod) == Some((host, PINS.1)), "{what}: {:?}", pins_mount(pod));
            }
        }
        // The history: slabtrace's host directory mounted writable, or none.
        if values["historyPath"] == "off" {
            ensure!(env("SLABTRACE_HISTORY_FILE").as_deref() == Some("off"), "{what}: history");
            ensure!(writable_mount(pod, "state").is_none(), "{what}: a history mount");
        } else {
            ensure!(writable_mount(pod, "state") == Some(STATE), "{what}: the history mount");
        }
        let priority = pod.priority_class_name.as_deref();
        match values["priorityClassName"].as_str() {
            Some("") => ensure!(priority.is_none(), "{what}: priority class {priority:?}"),
            _ => ensure!(priority == Some("system-node-critical"), "{what}: {priority:?}"),
        }
        let name = values["fullnameOverride"].as_str().unwrap_or("slabtrace");
        ensure!(ds.metadata.name.as_deref() == Some(name), "{what}: {:?}", ds.metadata.name);
    }
    Ok(())
}

#[test]
fn the_chart_ships_the_dashboard_to_grafanas_sidecar() -> Result<()> {
    let (objects, _) = render_chart(&json!({ "grafanaDashboard": { "enabled": true } }))?;
    let map = objects.config_maps.first().context("no ConfigMap")?;
    let labels = map.metadata.labels.clone().unwrap_or_default();
    ensure!(labels.get("grafana_dashboard").map(String::as_str) == Some("1"), "{labels:?}");
    let data = map.data.clone().unwrap_or_default();
    let json = data.get("slabtrace-dashboard.json").context("no dashboard in the ConfigMap")?;
    ensure!(json == &read("deploy/grafana/slabtrace-dashboard.json")?, "not the dashboard file");
    Ok(())
}

/// The chart's alert rules: rules/slabtrace.rules.yaml, a plain Prometheus rule file.
const RULES: &str = "deploy/helm/slabtrace/rules/slabtrace.rules.yaml";

#[test]
fn the_alert_rules_pass_promtools_checks_and_unit_tests() -> Result<()> {
    let dir = repo().join("deploy/helm/slabtrace/rules");
    for args in
        [["check", "rules", "slabtrace.rules.yaml"], ["test", "rules", "slabtrace.rules.test.yaml"]]
    {
        let out = Command::new("promtool").args(args).current_dir(&dir).output()?;
        ensure!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert is unit-tested: named in the test file.
    let rules: Value = documents(&read(RULES)?)?.remove(0);
    let tests = read("deploy/helm/slabtrace/rules/slabtrace.rules.test.yaml")?;
    let alerts: Vec<&str> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    ensure!(alerts.len() >= 6, "alerts: {alerts:?}");
    for alert in alerts {
        ensure!(tests.contains(&format!("alertname: {alert}")), "{alert} has no promtool test");
    }
    // The chart's PrometheusRule carries exactly those groups.
    let (objects, _) = render_chart(&json!({ "prometheusRule": { "enabled": true } }))?;
    let rule = objects.prometheus_rules.first().context("no PrometheusRule")?;
    ensure!(rule.spec.groups == rules["groups"], "the PrometheusRule's groups are not {RULES}'s");
    Ok(())
}

#[test]
fn the_charts_pod_monitor_is_the_plain_one_and_excludes_the_service_monitor() -> Result<()> {
    let (objects, _) = render_chart(&json!({ "podMonitor": { "enabled": true } }))?;
    let pm = objects.pod_monitors.first().context("no PodMonitor")?;
    let mut plain = Objects::default();
    let path = "deploy/kubernetes/optional/podmonitor.yaml";
    check_objects(path, &read(path)?, &mut plain)?;
    let plain = plain.pod_monitors.first().context("no plain PodMonitor")?;
    ensure!(pm.spec.pod_metrics_endpoints == plain.spec.pod_metrics_endpoints, "{pm:?}");
    let ds = objects.daemonsets.first().context("no DaemonSet")?;
    let selector = ds.spec.as_ref().map(|s| &s.selector.match_labels);
    ensure!(Some(&pm.spec.selector.match_labels) == selector, "selects {:?}", pm.spec.selector);
    // Both would scrape every pod twice: Helm refuses, with the reason.
    let both = json!({ "podMonitor": { "enabled": true }, "serviceMonitor": { "enabled": true } });
    let refused = helm::render(&chart_dir(), &release(), &both);
    let message = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(message.contains("enable one"), "both monitors rendered: {message:?}");
    Ok(())
}

#[test]
fn the_kubelet_snippet_has_the_keys_slabtrace_advise_prints() -> Result<()> {
    use slabtrace::advice::{NodeSample, Policy, advise};
    let sample = |t: f64, sunreclaim: u64| NodeSample {
        t,
        slab: sunreclaim * 2,
        sreclaimable: sunreclaim,
        sunreclaim,
        ..NodeSample::default()
    };
    let advice = advise(&[sample(0.0, 400 << 20), sample(60.0, 512 << 20)], &Policy::default())
        .context("no advice")?;
    let printed = documents(&advice.kubelet_config)?.remove(0);
    let shipped = documents(&read("deploy/kubelet-reservations.yaml")?)?.remove(0);
    let _: KubeletConfiguration = round_trip(&printed).context("what advise prints")?;
    let _: KubeletConfiguration =
        round_trip(&shipped).context("deploy/kubelet-reservations.yaml")?;
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    keys(&printed, "", &mut want);
    keys(&shipped, "", &mut got);
    ensure!(want == got, "advise prints keys {want:?}; the file has {got:?}");
    for k in ["apiVersion", "kind"] {
        ensure!(printed[k] == shipped[k], "{k}: {} vs {}", printed[k], shipped[k]);
    }
    // Quantities as the kubelet reads them, in MiB like advise's.
    for (section, key) in [
        ("systemReserved", "memory"),
        ("kubeReserved", "memory"),
        ("evictionHard", "memory.available"),
    ] {
        let q = shipped[section][key].as_str().context("not a string")?;
        ensure!(
            q.strip_suffix("Mi").is_some_and(|n| n.parse::<u64>().is_ok()),
            "{section}.{key}: {q}"
        );
    }
    Ok(())
}

/// Every key path of a YAML map (`/systemReserved/memory`).
fn keys(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let p = format!("{path}/{k}");
            keys(child, &p, out);
            out.insert(p);
        }
    }
}

/// Every `slabtrace_…` metric name in a `PromQL` expression.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("slabtrace_") {
        let boundary = rest[..i].chars().last().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if boundary {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
}

fn dashboard() -> Result<Value> {
    serde_json::from_str(&read("deploy/grafana/slabtrace-dashboard.json")?)
        .context("the dashboard is not JSON")
}

#[test]
fn the_dashboard_is_well_formed() -> Result<()> {
    let d = dashboard()?;
    ensure!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    ensure!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "no uid");
    // Provisionable as a file and by the sidecar: no import-time inputs, a datasource
    // variable instead (grafana#10786).
    ensure!(d.get("__inputs").is_none(), "__inputs break file and sidecar provisioning");
    let vars = d["templating"]["list"].as_array().context("no templating")?;
    let var_names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    ensure!(
        var_names == ["datasource", "instance", "namespace", "pod", "cache"],
        "variables {var_names:?}"
    );
    ensure!(vars[0]["type"] == "datasource" && vars[0]["query"] == "prometheus", "{}", vars[0]);
    let panels = d["panels"].as_array().context("no panels")?;
    ensure!(panels.len() >= 6, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let prometheus = json!({ "type": "prometheus", "uid": "${datasource}" });
    for p in panels {
        let title = p["title"].as_str().context("a panel without a title")?;
        let id = p["id"].as_u64().with_context(|| format!("{title}: no id"))?;
        ensure!(ids.insert(id), "{title}: id {id} is not unique");
        ensure!(p["datasource"] == prometheus, "{title}: datasource {}", p["datasource"]);
        let grid = &p["gridPos"];
        ensure!(["x", "y", "w", "h"].iter().all(|k| grid[k].is_u64()), "{title}: gridPos");
        let targets = p["targets"].as_array().with_context(|| format!("{title}: no targets"))?;
        ensure!(!targets.is_empty(), "{title}: no targets");
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            ensure!(!expr.trim().is_empty(), "{title}: a target without expr");
            ensure!(expr.contains("$instance"), "{title}: {expr} ignores the node variable");
            // Panels per pod follow the namespace, pod and cache variables (node-wide sums,
            // like attributed vs unaccounted slab, do not).
            if expr.contains("slabtrace_pod_") && expr.contains("by (namespace") {
                for var in ["$namespace", "$pod", "$cache"] {
                    ensure!(expr.contains(var), "{title}: {expr} ignores {var}");
                }
            }
            ensure!(t["datasource"] == prometheus, "{title}: target datasource");
            ensure!(ref_ids.insert(t["refId"].to_string()), "{title}: refIds repeat");
        }
    }
    Ok(())
}

/// Families that exist only once something happened (an OOM kill, a growth finding): a short
/// run on a quiet node may not export them, so only slabtrace's list of families vouches for
/// them.
const AFTER_EVENTS: &[&str] =
    &["slabtrace_oom_kills", "slabtrace_problematic_growth_bytes_per_second"];

/// The scrape job the Prometheus Operator makes of deploy/kubernetes/optional's
/// `ServiceMonitor` for the daemon at `target`: its `honorLabels` and relabelings, over the
/// target labels Kubernetes service discovery gives a pod of the `DaemonSet` (those the
/// Operator keeps as target labels, and the pod's node as the discovery's meta label).
fn operator_job(target: &str) -> Result<String> {
    let mut monitors = Objects::default();
    let path = "deploy/kubernetes/optional/servicemonitor.yaml";
    check_objects(path, &read(path)?, &mut monitors)?;
    let sm = monitors.service_monitors.first().context("no ServiceMonitor")?;
    let endpoint = sm.spec.endpoints.first().context("no endpoint")?;
    let relabel: Vec<Value> = endpoint
        .relabelings
        .iter()
        .flatten()
        .map(|r| {
            json!({ "source_labels": r.source_labels, "target_label": r.target_label,
                    "regex": r.regex, "replacement": r.replacement, "action": r.action })
        })
        .map(|mut v| {
            if let Some(m) = v.as_object_mut() {
                m.retain(|_, x| !x.is_null());
            }
            v
        })
        .collect();
    let labels = json!({
        "namespace": "slabtrace", "pod": "slabtrace-x7k2p", "container": "slabtrace",
        "service": "slabtrace", "endpoint": "metrics",
        "__meta_kubernetes_pod_node_name": "node-a",
    });
    Ok(format!(
        "  - job_name: serviceMonitor/slabtrace/slabtrace/0\n    honor_labels: {}\n    \
         static_configs:\n      - targets: ['{target}']\n        labels: {labels}\n    \
         relabel_configs: {}\n",
        endpoint.honor_labels.unwrap_or(false),
        Value::Array(relabel)
    ))
}

/// The pod series keep the pod they describe, not slabtrace's own pod's target labels
/// (`honorLabels`; an unnamed pod's namespace is the sentinel, never empty, which the target's
/// namespace would fill), and every series names the node.
fn check_pod_and_node_labels(prometheus: &Prometheus, pod: &Cgroup) -> Result<()> {
    let uid = pod.relative().rsplit('/').nth(1).and_then(|p| p.strip_prefix("pod")).unwrap_or("");
    let per_pod = prometheus.query("sum by (namespace, pod) (slabtrace_pod_live_bytes)")?;
    let pods: Vec<(&str, &str)> = per_pod
        .iter()
        .map(|r| {
            let m = &r["metric"];
            (m["namespace"].as_str().unwrap_or(""), m["pod"].as_str().unwrap_or(""))
        })
        .collect();
    ensure!(pods.contains(&("_unknown", uid)), "the pod {uid} is not its own series: {pods:?}");
    ensure!(
        !pods.iter().any(|(ns, pod)| *ns == "slabtrace" || *pod == "slabtrace-x7k2p"),
        "slabtrace's own pod took the pod series' labels: {pods:?}"
    );
    let node = prometheus.query("slabtrace_build_info{instance=\"node-a\", node=\"node-a\"}")?;
    ensure!(!node.is_empty(), "instance and node are not the node's name");
    Ok(())
}

#[test]
fn every_dashboard_metric_is_exported_by_a_real_daemon() -> Result<()> {
    require_root()?;
    let d = dashboard()?;
    let mut wanted = BTreeSet::new();
    for p in d["panels"].as_array().context("no panels")? {
        for t in p["targets"].as_array().into_iter().flatten() {
            metric_names(t["expr"].as_str().unwrap_or_default(), &mut wanted);
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        metric_names(v["definition"].as_str().unwrap_or_default(), &mut wanted);
        metric_names(v["query"]["query"].as_str().unwrap_or_default(), &mut wanted);
    }
    ensure!(wanted.len() >= 10, "too few metric names found: {wanted:?}");

    // A pod holding slab, so that the per-pod families have series.
    let fs = Tmpfs::mount("deploy")?;
    let daemon = Daemon::start("deploy", &["--interval", "1s"])?;
    let pod =
        Cgroup::create_at(&format!("/kubepods/besteffort/pod{}/0123456789abcdef", fresh_uid()?))?;
    pod.run(Command::new(workload()).arg("create").arg(fs.path()).arg("2000"))?;
    let deadline = Instant::now() + Duration::from_mins(1);
    let exposition = loop {
        let (status, body) = daemon.get("/metrics")?;
        if status == 200 && body.contains("slabtrace_pod_live_bytes{") {
            break body;
        }
        ensure!(
            Instant::now() < deadline,
            "no pod series within 60 s:\n{body}\n{}",
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(300));
    };
    // Sample names and family names (# TYPE), so `x_total` and `x` both count.
    let mut exported = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            exported.extend(t.split_whitespace().next().map(str::to_owned));
        } else if !line.starts_with('#') {
            exported.extend(line.split(['{', ' ']).next().map(str::to_owned));
        }
    }
    let mut missing = Vec::new();
    for name in &wanted {
        let family = name.strip_suffix("_total").unwrap_or(name);
        // slabtrace's own list of the families it can export.
        let listed = FAMILIES.contains(&family);
        let scraped = exported.contains(name) || exported.contains(family);
        // Not in this scrape: only a family that needs an event may be.
        if !listed || !(scraped || AFTER_EVENTS.contains(&family)) {
            missing.push(name.clone());
        }
    }
    ensure!(
        missing.is_empty(),
        "the dashboard queries metrics slabtrace does not export: {missing:?}\nexported: {exported:?}"
    );

    // Every panel's query, as Grafana would send it, through a real Prometheus scraping the
    // daemon: each must parse and evaluate, and those about the node and its pods must have
    // data. (The template variables become what Grafana substitutes: all instances, and a
    // rate window of a few scrapes.)
    let prometheus = Prometheus::start_with_job("deploy", &operator_job(&daemon.listen)?)?;
    let deadline = Instant::now() + Duration::from_mins(1);
    while prometheus
        .query("count_over_time(slabtrace_node_slab_bytes[1m])")?
        .first()
        .and_then(sample_value)
        < Some(6.0)
    {
        ensure!(
            Instant::now() < deadline,
            "Prometheus has no 6 scrapes after 60 s: {}",
            prometheus.log()
        );
        thread::sleep(Duration::from_millis(500));
    }
    for p in d["panels"].as_array().context("no panels")? {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            let mut promql = expr.replace("$__rate_interval", "5s");
            for var in ["$instance", "$namespace", "$pod", "$cache"] {
                promql = promql.replace(var, ".*");
            }
            let result = prometheus
                .query(&promql)
                .with_context(|| format!("panel {:?}: Prometheus refused {promql}", p["title"]))?;
            let has_data =
                ["slabtrace_node_slab", "slabtrace_pod_live_bytes", "slabtrace_bpf_map_bytes"];
            if has_data.iter().any(|m| expr.contains(m)) {
                ensure!(!result.is_empty(), "panel {:?}: no data for {promql}", p["title"]);
            }
        }
    }
    check_pod_and_node_labels(&prometheus, &pod)?;
    drop(prometheus);
    drop(pod);
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_secs(10))?;
    ensure!(stopped.status.success(), "the daemon failed: {}", stopped.stderr);
    Ok(())
}

/// The Vector config's remap program (deploy/vector/slabtrace.yaml).
fn vector_remap() -> Result<(Value, String)> {
    let config = documents(&read("deploy/vector/slabtrace.yaml")?)?
        .into_iter()
        .next()
        .context("an empty Vector config")?;
    let remap = &config["transforms"]["slabtrace_events"];
    ensure!(remap["type"] == "remap", "no remap transform `slabtrace_events`: {config}");
    let program = remap["source"].as_str().context("the remap has no source")?.to_owned();
    Ok((config, program))
}

/// A line of slabtrace's container log as Vector's `kubernetes_logs` source hands it on.
fn kubernetes_log(stream: &str, line: &str) -> Value {
    json!({
        "message": line,
        "stream": stream,
        "timestamp": "2026-12-04T10:00:00.123456789Z",
        "source_type": "kubernetes_logs",
        "file": "/var/log/pods/slabtrace_slabtrace-x7k2p_0f3c/slabtrace/0.log",
        "kubernetes": {
            "pod_name": "slabtrace-x7k2p",
            "pod_namespace": "slabtrace",
            "container_name": "slabtrace",
            "pod_labels": { "app.kubernetes.io/name": "slabtrace" },
        },
    })
}

/// The JSON type of a value, as a dynamic mapping takes it (integers and floats are one
/// numeric type to it).
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[test]
fn the_vector_config_selects_slabtraces_pods_and_writes_each_event_once() -> Result<()> {
    let (config, _) = vector_remap()?;
    let source = &config["sources"]["slabtrace_logs"];
    ensure!(source["type"] == "kubernetes_logs", "{source}");
    // The selector is one of the DaemonSet's pod labels, so it finds the pods.
    let selector = source["extra_label_selector"].as_str().context("no label selector")?;
    let (key, value) = selector.split_once('=').context("a selector that is not key=value")?;
    let labels = plain_daemonset()?
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    ensure!(labels.get(key).map(String::as_str) == Some(value), "{selector} is not in {labels:?}");
    let remap = &config["transforms"]["slabtrace_events"];
    ensure!(remap["drop_on_abort"] == true, "aborted lines must be dropped: {remap}");
    let sink = &config["sinks"]["slabtrace_elasticsearch"];
    ensure!(sink["inputs"] == json!(["slabtrace_events"]), "{sink}");
    // At-least-once delivery without copies: the document id is the event's unique id.
    ensure!(sink["id_key"] == "id", "{sink}");
    Ok(())
}

/// The Vector config's remap, run by VRL's own compiler and runtime (tests/src/vrl.rs) on
/// every line a real daemon wrote to stdout and stderr, with an OOM kill among them: every
/// event comes out whole, with where it came from, one JSON type per field name across the
/// stream (what Elasticsearch's dynamic mapping needs); every log line is dropped; nothing
/// fails at run time.
#[test]
fn the_vector_config_ships_every_event_of_a_real_daemon_and_no_log_line() -> Result<()> {
    require_root()?;
    let (_, program) = vector_remap()?;

    let fs = Tmpfs::mount("vector")?;
    let daemon = Daemon::start("vector", &["--interval", "1s", "--log-format", "json"])?;
    let pod =
        Cgroup::create_at(&format!("/kubepods/besteffort/pod{}/0123456789abcdef", fresh_uid()?))?;
    pod.run(Command::new(workload()).arg("create").arg(fs.path()).arg("2000"))?;
    // An OOM kill, so that the stream's richest event and its one field of two types are in.
    let memcg = Memcg::create("vector", 64 << 20)?;
    let cg2 = memcg.cgroup("vector")?;
    let mut hog = memcg.spawn(&cg2, Command::new(workload()).args(["hog", "512"]))?;
    ensure_killed(&mut hog)?;
    daemon.wait_for_event(|e| e["type"] == "oom")?;
    daemon.wait_for_event(|e| e["type"] == "slab.sample")?;
    // The lines as written, whole ones only (the stop removes the daemon's directory).
    let written = fs::read_to_string(daemon.dir().join("events.ndjson"))?;
    let stopped = daemon.stop(libc::SIGTERM, Duration::from_mins(1))?;
    let stdout: Vec<&str> =
        written.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n')).collect();
    let stderr: Vec<&str> = stopped.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(!stderr.is_empty(), "the daemon logged nothing");

    let mut lines: Vec<Value> = stdout.iter().map(|l| kubernetes_log("stdout", l)).collect();
    lines.extend(stderr.iter().map(|l| kubernetes_log("stderr", l)));
    // What else a container's stdout can hold: a line that is not JSON, and another schema.
    lines.push(kubernetes_log("stdout", "thread 'main' panicked at src/main.rs:1:1"));
    lines.push(kubernetes_log("stdout", r#"{"schema":"slabtrace.event.v2","type":"x"}"#));
    let outcomes = vrl::remap(&program, &lines)?;

    let mut types: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    for (i, (line, outcome)) in lines.iter().zip(&outcomes).enumerate() {
        let is_event = i < stdout.len();
        match outcome {
            Outcome::Event(out) if is_event => {
                let mut wrote: Value = serde_json::from_str(stdout[i])?;
                let object = wrote.as_object_mut().context("an event that is not an object")?;
                if object["type"] == "oom" {
                    ensure!(object.remove("slab").is_some(), "an oom event without `slab`");
                    ensure!(out.get("slab").is_none(), "oom's `slab` was shipped: {out}");
                }
                object.insert("timestamp".into(), line["timestamp"].clone());
                object.insert(
                    "kubernetes".into(),
                    json!({ "namespace": "slabtrace", "pod": "slabtrace-x7k2p", "container": "slabtrace" }),
                );
                ensure!(*out == wrote, "event {i} changed on the way:\n{out}\nwas\n{}", stdout[i]);
                kinds.insert(out["type"].as_str().unwrap_or_default().to_owned());
                for (name, v) in out.as_object().into_iter().flatten() {
                    if !v.is_null() {
                        types.entry(name.clone()).or_default().insert(json_type(v));
                    }
                }
            }
            Outcome::Aborted if !is_event => {}
            other => bail!("line {i} ({line}) came out as {other:?}"),
        }
    }
    for wanted in ["self.stats", "node.memory", "slab.sample", "oom"] {
        ensure!(kinds.contains(wanted), "no {wanted} event shipped: {kinds:?}");
    }
    let clashes: Vec<_> = types.iter().filter(|(_, t)| t.len() > 1).collect();
    ensure!(clashes.is_empty(), "field names with more than one type: {clashes:?}");
    eprintln!(
        "shipped {} events ({kinds:?}) and dropped {} log lines and 2 foreign lines",
        stdout.len(),
        stderr.len()
    );
    Ok(())
}
