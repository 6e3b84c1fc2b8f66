//! The one place a guest is granted anything. Everything a guest may touch — argv, environment,
//! directories, sockets, name lookup, standard streams, outbound HTTP, key-value stores — is built
//! here from a [`SandboxPolicy`], for commands, wasi:http requests and WAGI requests alike.
//!
//! Deny by default: `WasiCtxBuilder::new()` grants nothing (no args, env, files, sockets or name
//! lookup), and neither does `SandboxPolicy::default()`; only what the policy names is added. The
//! engines call these builders; they never grant on their own (check: `grep -rn "WasiCtxBuilder::new\|
//! preopened_dir\|allow_tcp\|HttpRequestDenied" crates/runtime/src` lists this file only).

use std::sync::Arc;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpHooks;

use crate::instance::{Stdio, StdioSpec};
use crate::kv::{KvCtx, KvError, Stores};
use crate::policy::{NetworkPolicy, OutboundRule};
use crate::{Error, Result, SandboxPolicy};

/// A policy with the key-value stores it grants opened: what a program's instances are created from.
/// Cheap to clone (serve hands one to every request).
#[derive(Clone)]
pub struct Grants {
    policy: Arc<SandboxPolicy>,
    outbound: Arc<[OutboundRule]>,
    kv: KvCtx,
}

impl Grants {
    /// Opens every store `policy` grants (through `stores`, which shares them between instances), so
    /// that a store that cannot be opened (its file in use, a malformed URL) is an error now rather
    /// than a guest's first failure.
    pub fn new(policy: SandboxPolicy, stores: &Stores) -> Result<Grants> {
        let mut opened = Vec::with_capacity(policy.kv.len());
        for grant in &policy.kv {
            let store = stores
                .open(&policy.app, grant)
                .map_err(|e: KvError| Error::Config(format!("cannot open key-value store `{}`: {e}", grant.name)))?;
            opened.push((grant.name.clone(), store));
        }
        Ok(Grants { outbound: policy.http_outbound.clone().into(), kv: KvCtx::new(opened), policy: Arc::new(policy) })
    }

    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    /// The WASI context: argv, environment, preopened directories, sockets and name lookup as the
    /// policy says, and `stdio`.
    pub(crate) fn wasi(&self, stdio: &Stdio) -> Result<WasiCtxBuilder> {
        let policy = &self.policy;
        let mut b = WasiCtxBuilder::new();
        // Host calls stay async (no `allow_blocking_current_thread`): a guest blocked in one, e.g.
        // sleeping in poll_oneoff, must stay interruptible by kill and timeout.
        b.args(&policy.args);
        b.envs(&policy.env);
        for m in &policy.mounts {
            let meta =
                std::fs::metadata(&m.host).map_err(|_| Error::Config(format!("mount source {} does not exist", m.host.display())))?;
            if !meta.is_dir() {
                return Err(Error::Config(format!("mount source {} is not a directory", m.host.display())));
            }
            let perms = if m.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            b.preopened_dir(&m.host, &m.guest, perms).map_err(|e| Error::Config(format!("cannot mount {}: {e:#}", m.host.display())))?;
        }
        grant_network(&mut b, &policy.network);
        set_stdio(&mut b, stdio)?;
        Ok(b)
    }

    /// The WASI context of one WAGI request: the policy's, plus the CGI variables, the request body
    /// as stdin, and stdout captured into `stdout`.
    pub(crate) fn wagi(
        &self,
        cgi_env: &[(String, String)],
        body: bytes::Bytes,
        stdout: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    ) -> Result<WasiCtxBuilder> {
        let stdio = Stdio { stdin: StdioSpec::Null, stdout: StdioSpec::Null, stderr: StdioSpec::Inherit };
        let mut b = self.wasi(&stdio)?;
        b.envs(cgi_env);
        b.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(body));
        b.stdout(stdout);
        Ok(b)
    }

    /// Outbound HTTP (wasi:http/outgoing-handler), checked against the policy's allow-list.
    pub(crate) fn outbound_http(&self) -> Outbound {
        Outbound { allow: self.outbound.clone() }
    }

    /// The key-value stores the guest may open.
    pub(crate) fn kv(&self) -> KvCtx {
        self.kv.clone()
    }
}

fn grant_network(b: &mut WasiCtxBuilder, net: &NetworkPolicy) {
    b.allow_ip_name_lookup(net.name_lookup);
    let any = !net.allow.is_empty();
    b.allow_tcp(any).allow_udp(any);
    let net = Arc::new(net.clone());
    b.socket_addr_check(move |addr, use_| {
        use wasmtime_wasi::sockets::SocketAddrUse as U;
        let implicit_bind = matches!(use_, U::TcpBind | U::UdpBind);
        let ok = match use_ {
            // Accepting a client on a listener the policy already allowed.
            U::TcpAccept => !net.allow.is_empty(),
            _ => net.allows(addr, implicit_bind),
        };
        if !ok {
            tracing::debug!(%addr, ?use_, "socket use denied by policy");
        }
        Box::pin(async move { ok })
    });
}

fn set_stdio(b: &mut WasiCtxBuilder, stdio: &Stdio) -> Result<()> {
    use wasmtime_wasi::cli::{InputFile, OutputFile};
    let open_out = |p: &std::path::Path| {
        std::fs::OpenOptions::new().append(true).create(true).open(p).map_err(Error::io(format!("failed to open {}", p.display())))
    };
    match &stdio.stdin {
        StdioSpec::Inherit => {
            b.inherit_stdin();
        }
        StdioSpec::Null => {}
        StdioSpec::File(p) => {
            let f = std::fs::File::open(p).map_err(Error::io(format!("failed to open {}", p.display())))?;
            b.stdin(InputFile::new(f));
        }
    }
    for (spec, stdout) in [(&stdio.stdout, true), (&stdio.stderr, false)] {
        match spec {
            StdioSpec::Inherit if stdout => {
                b.inherit_stdout();
            }
            StdioSpec::Inherit => {
                b.inherit_stderr();
            }
            StdioSpec::Null => {}
            StdioSpec::File(p) if stdout => {
                b.stdout(OutputFile::new(open_out(p)?));
            }
            StdioSpec::File(p) => {
                b.stderr(OutputFile::new(open_out(p)?));
            }
        }
    }
    Ok(())
}

/// Outbound HTTP, checked against the policy's allow-list before anything leaves the host; a request
/// to anywhere else gets `HTTP-request-denied`.
pub(crate) struct Outbound {
    allow: Arc<[OutboundRule]>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.allow.iter().any(|r| r.allows(&scheme, &host, port)) {
            tracing::info!(%scheme, %host, port, "outbound HTTP request denied by policy");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }

    /// One write's worth of an outgoing body is buffered by the host; bounded like a header map, so
    /// that a guest's resources hold at most its memory cap (see the engine's `max_resources`).
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::engine::RESOURCE_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;
    use crate::policy::{KvBackend, KvGrant, Mount};

    fn grants(policy: SandboxPolicy) -> Result<Grants> {
        Grants::new(policy, &Stores::new(Home::at("/nonexistent-wasmcell-home")))
    }

    #[test]
    fn a_mount_that_does_not_exist_is_refused_before_anything_runs() {
        let mut p = SandboxPolicy::default();
        p.mounts.push(Mount { host: "/nonexistent/dir".into(), guest: "/data".into(), read_only: false });
        let err = grants(p).unwrap().wasi(&Stdio::default()).err().expect("refused");
        assert!(matches!(&err, Error::Config(m) if m.contains("/nonexistent/dir")), "{err}");
    }

    #[test]
    fn only_granted_stores_are_opened_and_the_default_grants_none() {
        let none = grants(SandboxPolicy::default()).unwrap();
        assert!(none.kv().is_empty());
        let mut p = SandboxPolicy { app: "app".into(), ..SandboxPolicy::default() };
        p.kv.push(KvGrant { name: "cache".into(), backend: KvBackend::Memory });
        let g = grants(p).unwrap();
        assert_eq!(g.kv().granted_names(), ["cache"]);
    }

    #[test]
    fn outbound_http_is_denied_without_a_rule() {
        let g = grants(SandboxPolicy::default()).unwrap();
        assert!(g.outbound_http().allow.is_empty());
        let mut p = SandboxPolicy::default();
        p.http_outbound.push("http://127.0.0.1:8080".parse().unwrap());
        let g = grants(p).unwrap();
        assert!(g.outbound_http().allow.iter().any(|r| r.allows("http", "127.0.0.1", 8080)));
        assert!(!g.outbound_http().allow.iter().any(|r| r.allows("http", "127.0.0.1", 8081)));
    }
}
