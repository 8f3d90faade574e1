//! nginx on 127.0.0.1 as an HTTPS receiver that speaks HTTP/2 (ALPN `h2`),
//! proxying each request over HTTP/1.1 to a [`crate::Receiver`], which checks
//! what arrives (signature included). nginx's access log says which protocol
//! and which connection each request came on.

use std::path::PathBuf;
use std::process::Command;

use crate::{TempDir, TestCa};

pub struct Nginx {
    port: u16,
    dir: TempDir,
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// nginx's connection serial number.
    pub connection: u64,
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub protocol: String,
    pub status: u16,
}

impl Nginx {
    /// HTTPS with `http2` on a free loopback port, certificate from `ca`,
    /// proxying to `upstream_port`; a connection carries at most
    /// `keepalive_requests` requests (nginx then closes it with GOAWAY).
    pub fn h2_proxy(ca: &TestCa, upstream_port: u16, keepalive_requests: u32) -> Nginx {
        let dir = TempDir::new("nginx");
        let (cert, key) = ca.server_cert_files(dir.path());
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format wo '$connection $server_protocol $status';
    access_log {d}/access.log wo;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests {keepalive_requests};
    upstream receiver {{ server 127.0.0.1:{upstream_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://receiver;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
",
            cert = cert.display(),
            key = key.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let out = Command::new("nginx").arg("-c").arg(&conf_path).output().expect("run nginx (apt install nginx)");
        assert!(out.status.success(), "nginx: {}", String::from_utf8_lossy(&out.stderr));
        Nginx { port, dir }
    }

    /// The URL of its one location, by the certificate's name.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/hook", self.port)
    }

    pub fn access_log(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                Logged {
                    connection: f[0].parse().expect("connection number"),
                    protocol: f[1].to_owned(),
                    status: f[2].parse().expect("status"),
                }
            })
            .collect()
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("nginx.pid")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: a plain kill(2) of the nginx master this value started.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
            }
        }
    }
}

/// A port nobody listens on now (bound, then released for nginx).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
