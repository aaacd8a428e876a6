//! The Kubernetes manifests under `deploy/kubernetes/`: every kustomization renders and
//! `kubernetes-validate --strict` accepts every object (`validate.sh`, offline), and —
//! what no schema can know — the rendered demo fits the app: its probes answer, its
//! ports agree, every variable it sets is one the app reads, and the app's
//! configuration accepts the whole environment.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use ecommerce_monolith::config::{Settings, Source};
use reqwest::StatusCode;
use yaml_serde::Value as Yaml;

use crate::helpers::spawn_app;
use crate::require::tool_available;

const KUBECTL: &str = "kubectl 1.27 or newer (https://kubernetes.io/docs/tasks/tools/)";
const VALIDATOR: &str = "pip install kubernetes-validate";

/// The settings an admin switches live; set in a pod's environment they would be put in
/// force again at every pod start (see the README, "Live settings").
const LIVE_SETTINGS: [&str; 8] = [
    "PAYMENT_DELAY_MS",
    "PAYMENT_SUCCESS_RATE",
    "PAYMENT_FLAP_RATE",
    "PAYMENT_CAPACITY",
    "EMAIL_DELAY_MS",
    "EMAIL_OUTAGE",
    "EMAIL_HANG",
    "CHECKOUT_MODE",
];

fn kustomize(dir: &str, flags: &[&str]) -> Vec<Yaml> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .args(flags)
        .arg(&path)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("a YAML object"))
        .collect()
}

fn one<'a>(objects: &'a [Yaml], kind: &str, name_prefix: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = objects
        .iter()
        .filter(|o| {
            o["kind"].as_str() == Some(kind)
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name_prefix}*");
    found[0]
}

/// The environment a container gets from its `envFrom` ConfigMaps and Secrets and its
/// `env` values, as rendered.
fn container_environment(objects: &[Yaml], container: &Yaml) -> BTreeMap<String, String> {
    let mut environment = BTreeMap::new();
    for source in container["envFrom"].as_sequence().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            let map = one(objects, "ConfigMap", name);
            for (key, value) in map["data"].as_mapping().into_iter().flatten() {
                environment.insert(
                    key.as_str().expect("key").to_string(),
                    value.as_str().unwrap_or_default().to_string(),
                );
            }
        }
        if let Some(name) = source["secretRef"]["name"].as_str() {
            let secret = one(objects, "Secret", name);
            for (key, value) in secret["data"].as_mapping().into_iter().flatten() {
                // Long values come folded over several lines.
                let encoded: String = value
                    .as_str()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .expect("base64");
                environment.insert(
                    key.as_str().expect("key").to_string(),
                    String::from_utf8(decoded).expect("UTF-8"),
                );
            }
        }
    }
    for variable in container["env"].as_sequence().into_iter().flatten() {
        environment.insert(
            variable["name"].as_str().expect("name").to_string(),
            variable["value"].as_str().unwrap_or_default().to_string(),
        );
    }
    environment
}

/// Answers from a fixed environment and remembers every name the app asks for.
struct Recording<'a> {
    environment: &'a BTreeMap<String, String>,
    asked: RefCell<BTreeSet<String>>,
}

impl Source for Recording<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.asked.borrow_mut().insert(name.to_string());
        self.environment.get(name).cloned()
    }
}

#[test]
fn every_kustomization_renders_and_validates_offline() {
    if !tool_available("kubectl", KUBECTL) || !tool_available("kubernetes-validate", VALIDATOR) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/validate.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "validate.sh:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_demo_fits_the_app_it_runs() {
    if !tool_available("kubectl", KUBECTL) {
        return;
    }
    let base = kustomize("deploy/kubernetes/base", &[]);
    assert!(
        !base.iter().any(|o| o["kind"].as_str() == Some("Secret")),
        "the base commits no Secret"
    );
    let demo = kustomize("deploy/kubernetes/overlays/demo", &[]);
    let deployment = one(&demo, "Deployment", "ecommerce-monolith");
    let pod = &deployment["spec"]["template"];
    let app = pod["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("app"))
        .expect("container app");
    let environment = container_environment(&demo, app);

    // The app's configuration accepts exactly this environment, and asks for every
    // variable in it (the OTEL_BSP_* ones are read by the OpenTelemetry SDK itself).
    let recording = Recording {
        environment: &environment,
        asked: RefCell::default(),
    };
    let settings = Settings::from_source(&recording)
        .unwrap_or_else(|e| panic!("the app would not start with the demo's environment: {e}"));
    let asked = recording.asked.into_inner();
    for name in environment.keys() {
        assert!(
            asked.contains(name) || name.starts_with("OTEL_BSP_"),
            "{name} is set but the app never reads it"
        );
    }
    for live in LIVE_SETTINGS {
        assert!(
            !environment.contains_key(live),
            "{live} would undo an admin's live switch at every pod start"
        );
    }

    // Ports: the container listens where BIND_ADDR says, and everything points there.
    let port = settings.bind_addr.port();
    let container_port = app["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("http"))
        .expect("a port named http")["containerPort"]
        .as_u64()
        .expect("number");
    assert_eq!(container_port, u64::from(port), "containerPort = BIND_ADDR");
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    let service = one(&demo, "Service", "ecommerce-monolith");
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(
        target.as_str() == Some("http") || target.as_u64() == Some(u64::from(port)),
        "the Service targets the app's port: {target:?}"
    );

    // Probes: each points at the app's port and at a route that answers 200.
    let running = spawn_app().await;
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let http = &app[probe]["httpGet"];
        let path = http["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} has an HTTP path"));
        assert!(
            http["port"].as_str() == Some("http") || http["port"].as_u64() == Some(container_port),
            "{probe} port"
        );
        assert_eq!(
            running.get(path, None).await.status(),
            StatusCode::OK,
            "{probe} {path}"
        );
    }
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/path"].as_str(),
        Some("/metrics")
    );

    // The kubelet's SIGKILL comes after the preStop pause and the app's whole shutdown:
    // the deadline, the rollbacks after it, and the last scrape's linger.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pause: u64 = app["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .and_then(|c| c.last())
        .and_then(Yaml::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let shutdown = settings.shutdown_timeout
        + ecommerce_monolith::startup::AFTER_DEADLINE
        + settings.shutdown_metrics_linger;
    assert!(
        grace > shutdown.as_secs() + pause,
        "grace {grace} s vs shutdown {shutdown:?} + preStop {pause} s"
    );
    assert_eq!(
        app["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
}

#[test]
fn the_cluster_observability_uses_the_repositorys_own_dashboards_and_alerts() {
    if !tool_available("kubectl", KUBECTL) {
        return;
    }
    let objects = kustomize(
        "deploy/kubernetes/observability",
        &["--load-restrictor", "LoadRestrictionsNone"],
    );
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(repository.join("grafana/dashboards")).expect("dashboards") {
        let path = entry.expect("entry").path();
        let file = path.file_name().and_then(|n| n.to_str()).expect("name");
        let text = std::fs::read_to_string(&path).expect("read");
        let shipped = objects.iter().any(|o| {
            o["kind"].as_str() == Some("ConfigMap") && o["data"][file].as_str() == Some(&text)
        });
        assert!(
            shipped,
            "{file} is not shipped as a ConfigMap (observability/kustomization.yaml)"
        );
    }
    let alerts = std::fs::read_to_string(repository.join("alerts.yml")).expect("alerts.yml");
    assert_eq!(
        one(&objects, "ConfigMap", "ecommerce-monolith-alerts")["data"]["alerts.yml"].as_str(),
        Some(alerts.as_str())
    );
}
