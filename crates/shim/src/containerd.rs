//! containerd's own API, spoken back to the containerd that started the shim (gRPC on its `-address`
//! socket, in the shim's namespace): the container's image → its manifest → its wasm layer, read from
//! containerd's content store.
//!
//! This is how wasm-layer images (the CNCF Wasm artifact: config `application/vnd.wasm.config.v0+json`,
//! layer `application/wasm`) run: containerd 1.6 cannot unpack such a layer into a rootfs, so the
//! container's rootfs is empty and the module comes from the content store instead. What the image
//! launches is decided by `wasmcell_oci::launch`, as for `wasmcell run`: [`ContentStore`] is only where
//! the bytes come from. The layer is verified against its digest and written into the bundle directory
//! (containerd's, removed with the container), from where the runtime loads it like any module.
//!
//! The messages of the calls used are declared here (field numbers from containerd's
//! `api/services/{containers,images,content}/v1/*.proto`, which is the wire contract) and carried by
//! tonic and prost: containerd-client would need protoc at build time for the same few messages.

use std::path::{Path, PathBuf};

use tonic::codegen::http::uri::PathAndQuery;
use wasmcell_oci::Digest;
use wasmcell_oci::image::Descriptor;
use wasmcell_oci::launch::{BlobSource, Launch};
use wasmcell_oci::store::MAX_LAYER_BYTES;

use crate::error::{Error, Result};
use crate::trust;

/// The gRPC header containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The type URL containerd gives an OCI runtime spec carried in an `Any`.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// containerd's messages, as much of them as the shim (and the tests that play CRI) use.
pub mod api {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Runtime {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub options: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(map = "string, string", tag = "2")]
        pub labels: HashMap<String, String>,
        #[prost(string, tag = "3")]
        pub image: String,
        #[prost(message, optional, tag = "4")]
        pub runtime: Option<Runtime>,
        #[prost(message, optional, tag = "5")]
        pub spec: Option<Any>,
        #[prost(string, tag = "6")]
        pub snapshotter: String,
        #[prost(string, tag = "7")]
        pub snapshot_key: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerRequest {
        #[prost(message, optional, tag = "1")]
        pub container: Option<Container>,
    }

    /// `GetContainerRequest`, `DeleteContainerRequest`, `GetImageRequest`: one string, field 1.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ById {
        #[prost(string, tag = "1")]
        pub id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Descriptor {
        #[prost(string, tag = "1")]
        pub media_type: String,
        #[prost(string, tag = "2")]
        pub digest: String,
        #[prost(int64, tag = "3")]
        pub size: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "3")]
        pub target: Option<Descriptor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageResponse {
        #[prost(message, optional, tag = "1")]
        pub image: Option<Image>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadContentRequest {
        #[prost(string, tag = "1")]
        pub digest: String,
        #[prost(int64, tag = "2")]
        pub offset: i64,
        #[prost(int64, tag = "3")]
        pub size: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadContentResponse {
        #[prost(int64, tag = "1")]
        pub offset: i64,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }
}

/// A connection to containerd's gRPC API in one namespace. Blocking: each call runs on the client's own
/// single-threaded runtime (the shim's task service is synchronous).
pub struct Client {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    namespace: String,
    address: String,
}

impl Client {
    /// Connects to containerd's socket (`unix://` optional).
    pub fn connect(address: &str, namespace: &str) -> Result<Client> {
        let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(address));
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::io("failed to start the async runtime"))?;
        let fail = |e: tonic::transport::Error| Error::Containerd(format!("cannot connect to containerd at {}: {e}", path.display()));
        // The URI is required by the API and unused: every connection goes to the socket.
        let endpoint = tonic::transport::Endpoint::from_static("http://containerd").connect_timeout(std::time::Duration::from_secs(5));
        let socket = path.clone();
        let channel = rt
            .block_on(endpoint.connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move { tokio::net::UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
            })))
            .map_err(fail)?;
        Ok(Client { rt, channel, namespace: namespace.to_string(), address: path.display().to_string() })
    }

    /// Runs `work` on this client's runtime (what a registry request from the shim runs on).
    pub(crate) fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        self.rt.block_on(work)
    }

    fn request<M>(&self, message: M) -> Result<tonic::Request<M>> {
        let mut request = tonic::Request::new(message);
        let ns = self.namespace.parse().map_err(|_| Error::InvalidSpec(format!("{:?}: not a valid namespace", self.namespace)))?;
        request.metadata_mut().insert(NAMESPACE_HEADER, ns);
        request.set_timeout(std::time::Duration::from_secs(30));
        Ok(request)
    }

    /// One unary call of containerd's API (`/package.Service/Method`), e.g. CRI's on the same socket.
    pub fn unary<Req, Resp>(&self, path: &'static str, message: Req) -> Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let request = self.request(message)?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        self.rt
            .block_on(async move {
                grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                grpc.unary(request, PathAndQuery::from_static(path), tonic_prost::ProstCodec::default()).await
            })
            .map(tonic::Response::into_inner)
            .map_err(|s| self.status(path, s))
    }

    fn status(&self, path: &str, s: tonic::Status) -> Error {
        let call = path.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(".");
        match s.code() {
            // containerd's own words name what is missing: `image "NAME": not found`.
            tonic::Code::NotFound => Error::Containerd(s.message().to_string()),
            _ => Error::Containerd(format!("{call} at {}: {}", self.address, s.message())),
        }
    }

    /// The container record (its image name, runtime, spec).
    pub fn container(&self, id: &str) -> Result<api::Container> {
        let resp: api::ContainerRequest =
            self.unary("/containerd.services.containers.v1.Containers/Get", api::ById { id: id.to_string() })?;
        resp.container.ok_or_else(|| Error::Containerd(format!("containerd returned no container for {id}")))
    }

    /// Creates a container record: what CRI or ctr does before it creates a task.
    pub fn create_container(&self, container: api::Container) -> Result<()> {
        let _: api::ContainerRequest =
            self.unary("/containerd.services.containers.v1.Containers/Create", api::ContainerRequest { container: Some(container) })?;
        Ok(())
    }

    pub fn delete_container(&self, id: &str) -> Result<()> {
        let _: api::Empty = self.unary("/containerd.services.containers.v1.Containers/Delete", api::ById { id: id.to_string() })?;
        Ok(())
    }

    /// The image record (its target descriptor).
    pub fn image(&self, name: &str) -> Result<api::Image> {
        let resp: api::ImageResponse = self.unary("/containerd.services.images.v1.Images/Get", api::ById { id: name.to_string() })?;
        resp.image.ok_or_else(|| Error::Containerd(format!("containerd returned no image for {name}")))
    }

    /// A blob from the content store, whole, checked against the descriptor's size and digest.
    pub fn read(&self, desc: &api::Descriptor, max: u64) -> Result<Vec<u8>> {
        if desc.size < 0 || desc.size as u64 > max {
            return Err(Error::InvalidSpec(format!(
                "{} ({}): {} bytes, more than the {max} allowed",
                desc.digest, desc.media_type, desc.size
            )));
        }
        let path = "/containerd.services.content.v1.Content/Read";
        let request = self.request(api::ReadContentRequest { digest: desc.digest.clone(), offset: 0, size: 0 })?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let size = desc.size as usize;
        let data = self
            .rt
            .block_on(async move {
                grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut stream = grpc
                    .server_streaming::<_, api::ReadContentResponse, _>(
                        request,
                        PathAndQuery::from_static(path),
                        tonic_prost::ProstCodec::default(),
                    )
                    .await?
                    .into_inner();
                let mut data = Vec::with_capacity(size);
                while let Some(chunk) = stream.message().await? {
                    if data.len() + chunk.data.len() > size {
                        return Err(tonic::Status::data_loss("more data than the descriptor's size"));
                    }
                    data.extend_from_slice(&chunk.data);
                }
                Ok(data)
            })
            .map_err(|s| self.status(path, s))?;
        verify(desc, &data)?;
        Ok(data)
    }
}

fn verify(desc: &api::Descriptor, data: &[u8]) -> Result<()> {
    let digest: Digest = desc.digest.parse().map_err(|e| Error::InvalidSpec(format!("{e}")))?;
    if data.len() as i64 != desc.size || Digest::of(data) != digest {
        return Err(Error::Containerd(format!("{}: the content store's data does not match its digest", desc.digest)));
    }
    Ok(())
}

/// What container `id`'s image launches, decided as `wasmcell run` decides it (`wasmcell_oci::launch`),
/// its wasm layer written into `dir` (the bundle). `rootfs` is the container's (a compat image's layers,
/// unpacked by containerd); `module` (args[0]) names the module, as the image's Entrypoint would.
/// `Ok(None)` when the container has no image. Where the node's policy requires a signer for the
/// image, `code` is where its precompiled code may come from.
pub fn launch(
    client: &Client,
    id: &str,
    module: Option<&str>,
    dir: &Path,
    rootfs: &Path,
    code: &mut Option<trust::CodeSource>,
) -> Result<Option<Launch>> {
    let container = client.container(id)?;
    if container.image.is_empty() {
        return Ok(None);
    }
    let image = client.image(&container.image)?;
    let target = image.target.ok_or_else(|| Error::Containerd(format!("{}: the image has no target", container.image)))?;
    let digest: Digest = target.digest.parse().map_err(|e| Error::InvalidSpec(format!("{}: {e}", container.image)))?;
    let target = Descriptor {
        media_type: target.media_type,
        digest,
        size: target.size.max(0) as u64,
        platform: None,
        annotations: Default::default(),
    };
    *code = trust::check(client, &container.image, &target.digest)?;
    let source = ContentStore { client, dir, rootfs };
    match Launch::from_target(&source, &target, &container.image, module) {
        Ok(launch) => Ok(Some(launch)),
        // The image's fault: say which image.
        Err(Error::InvalidSpec(m)) => Err(Error::InvalidSpec(format!("{}: {m}", container.image))),
        Err(e) => Err(e),
    }
}

/// containerd's content store as the source of an image's bytes.
pub struct ContentStore<'a> {
    pub client: &'a Client,
    /// Where the wasm layer is written (the bundle directory).
    pub dir: &'a Path,
    /// The container's rootfs: containerd unpacked a compat image's layers into its snapshot there.
    pub rootfs: &'a Path,
}

impl BlobSource for ContentStore<'_> {
    type Error = Error;

    fn read_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        self.client.read(&descriptor(desc), limit)
    }

    fn wasm_file(&self, layer: &Descriptor) -> Result<PathBuf> {
        let bytes = self.client.read(&descriptor(layer), MAX_LAYER_BYTES)?;
        let path = self.dir.join(format!("{}.wasm", layer.digest.hex()));
        wasmcell_fsutil::atomic_write(&path, &bytes).map_err(Error::io(format!("cannot write {}", path.display())))?;
        Ok(path)
    }

    fn rootfs(&self, _manifest: &Digest, _layers: &[Descriptor]) -> Result<PathBuf> {
        Ok(self.rootfs.to_path_buf())
    }
}

fn descriptor(d: &Descriptor) -> api::Descriptor {
    api::Descriptor { media_type: d.media_type.clone(), digest: d.digest.to_string(), size: d.size as i64 }
}
