//! A CRI client (Kubernetes' container runtime interface, `runtime.v1.RuntimeService`, served by
//! containerd's CRI plugin on its gRPC socket): the calls the kubelet makes to run a pod, so the tests can
//! drive containerd exactly as a Kubernetes node does. No crictl here (not packaged for Debian 12), so
//! the messages the tests need are declared with prost from cri-api's `api.proto` (field numbers are the
//! wire contract) and carried by the shim's own gRPC client.

use std::collections::HashMap;

use wasmcell_shim::containerd::Client;

/// `NamespaceMode`: the pod shares the node's namespace.
pub const NODE: i32 = 2;
/// `ContainerState::CONTAINER_EXITED`.
pub const EXITED: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    #[prost(int32, tag = "1")]
    pub network: i32,
    #[prost(int32, tag = "2")]
    pub pid: i32,
    #[prost(int32, tag = "3")]
    pub ipc: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    runtime_handler: String,
}

/// Every CRI request and response that is a single id string (field 1).
#[derive(Clone, PartialEq, prost::Message)]
struct Id {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerResources {
    #[prost(int64, tag = "1")]
    pub cpu_period: i64,
    #[prost(int64, tag = "2")]
    pub cpu_quota: i64,
    #[prost(int64, tag = "4")]
    pub memory_limit_in_bytes: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub resources: Option<LinuxContainerResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    #[prost(string, tag = "11")]
    pub log_path: String,
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(int32, tag = "7")]
    pub exit_code: i32,
    #[prost(string, tag = "10")]
    pub reason: String,
    #[prost(string, tag = "11")]
    pub message: String,
    #[prost(string, tag = "15")]
    pub log_path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<ContainerStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StopContainerRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(int64, tag = "2")]
    timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatsRequest {
    #[prost(string, tag = "1")]
    container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatsResponse {
    #[prost(message, optional, tag = "1")]
    stats: Option<ContainerStats>,
}

/// What `kubectl top` shows of a container (the CPU part).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStats {
    #[prost(message, optional, tag = "2")]
    pub cpu: Option<CpuUsage>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuUsage {
    #[prost(int64, tag = "1")]
    pub timestamp: i64,
    #[prost(message, optional, tag = "2")]
    pub usage_core_nano_seconds: Option<UInt64Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UInt64Value {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    image: Option<ImageSpec>,
}

/// The kubelet's side of CRI.
pub struct Cri {
    client: Client,
}

type Result<T> = std::result::Result<T, wasmcell_shim::Error>;

impl Cri {
    pub fn connect(containerd: &super::containerd::Containerd) -> Cri {
        Cri { client: Client::connect(&containerd.socket().to_string_lossy(), "k8s.io").unwrap() }
    }

    /// RunPodSandbox: the pod's sandbox under `handler` (a RuntimeClass's handler); its id.
    pub fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.to_string() };
        let resp: Id = self.client.unary("/runtime.v1.RuntimeService/RunPodSandbox", req)?;
        Ok(resp.id)
    }

    /// PullImage (ImageService): the image's id.
    pub fn pull(&self, image: &str) -> Result<String> {
        let resp: Id =
            self.client.unary("/runtime.v1.ImageService/PullImage", PullImageRequest { image: Some(ImageSpec { image: image.into() }) })?;
        Ok(resp.id)
    }

    pub fn stop_pod(&self, id: &str) -> Result<()> {
        let _: Empty = self.client.unary("/runtime.v1.RuntimeService/StopPodSandbox", Id { id: id.to_string() })?;
        Ok(())
    }

    pub fn remove_pod(&self, id: &str) -> Result<()> {
        let _: Empty = self.client.unary("/runtime.v1.RuntimeService/RemovePodSandbox", Id { id: id.to_string() })?;
        Ok(())
    }

    /// CreateContainer in pod `pod`; its id.
    pub fn create(&self, pod: &str, config: ContainerConfig, pod_config: &PodSandboxConfig) -> Result<String> {
        let req =
            CreateContainerRequest { pod_sandbox_id: pod.to_string(), config: Some(config), sandbox_config: Some(pod_config.clone()) };
        let resp: Id = self.client.unary("/runtime.v1.RuntimeService/CreateContainer", req)?;
        Ok(resp.id)
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let _: Empty = self.client.unary("/runtime.v1.RuntimeService/StartContainer", Id { id: id.to_string() })?;
        Ok(())
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout` seconds.
    pub fn stop(&self, id: &str, timeout: i64) -> Result<()> {
        let _: Empty = self
            .client
            .unary("/runtime.v1.RuntimeService/StopContainer", StopContainerRequest { container_id: id.to_string(), timeout })?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let _: Empty = self.client.unary("/runtime.v1.RuntimeService/RemoveContainer", Id { id: id.to_string() })?;
        Ok(())
    }

    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        let resp: ContainerStatusResponse = self
            .client
            .unary("/runtime.v1.RuntimeService/ContainerStatus", ContainerStatusRequest { container_id: id.to_string(), verbose: false })?;
        Ok(resp.status.unwrap_or_default())
    }

    /// ContainerStats: what the kubelet's stats (and `kubectl top`) read.
    pub fn stats(&self, id: &str) -> Result<ContainerStats> {
        let resp: ContainerStatsResponse =
            self.client.unary("/runtime.v1.RuntimeService/ContainerStats", ContainerStatsRequest { container_id: id.to_string() })?;
        Ok(resp.stats.unwrap_or_default())
    }
}
