//! The development adapter's example Deployment (`examples/dev-scanner-deployment.yaml`) starts
//! the adapter: its container args are run against this crate's binary.

use std::path::Path;

use serde::Deserialize;

/// The example Deployment runs the `dev-scanner` image with args that work:
/// run them (on a loopback port instead of 0.0.0.0:8080) and ask for the adapter's metadata.
#[test]
fn dev_scanner_example_args_start_the_adapter() {
    use std::io::{Read, Write};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/dev-scanner-deployment.yaml")).unwrap();
    let deployment = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("YAML"))
        .find(|doc| doc["kind"] == "Deployment")
        .expect("a Deployment");
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let local = format!("127.0.0.1:{port}");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a == "0.0.0.0:8080" {
                local.clone()
            } else {
                a
            }
        })
        .collect();
    assert!(
        args.contains(&local),
        "the example listens on 0.0.0.0:8080: {args:?}"
    );

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_dev-scanner"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the development adapter"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let response = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&local) {
            s.write_all(b"GET /api/v1/metadata HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            if s.read_to_string(&mut response).is_ok() && !response.is_empty() {
                break response;
            }
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the adapter exited with {status} for args {args:?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the adapter does not answer on {local}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        response.split_whitespace().nth(1),
        Some("200"),
        "GET /api/v1/metadata: {response}"
    );
    assert!(response.contains("scanreport-dev-scanner"), "{response}");
}
