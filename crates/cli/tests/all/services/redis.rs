//! A real `redis-server` (Debian) on 127.0.0.1, in a private dir, persistence off; stoppable and
//! restartable on the same port (for the outage test).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, spawn_service, stop_group, wait_for};

pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::Builder::new().prefix("wasmcell-redis-").tempdir().unwrap();
        let mut r = Redis { child: None, port: free_port(), dir };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server (SIGKILL to its group): clients see connection errors.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_group(&mut c, Duration::ZERO);
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn_service(cmd).unwrap_or_else(|e| panic!("failed to start redis-server (is redis-server installed?): {e}"));
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok())
            .unwrap_or_else(|| panic!("redis-server did not listen on {port}: {}", log_of(self.dir.path())));
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
