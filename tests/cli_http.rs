//! The HTTP listener of a real `ota serve`: `ota http-token` makes a token
//! and its config line; the bridge started with that `[http]` section
//! answers the token's reads and refuses a read without it; it stops on
//! SIGTERM with the rest; a bad `[http]` key stops `ota serve` with the
//! key named.

mod cli_support;
mod serve_support;

use std::io::{Read, Write};
use std::net::SocketAddr;

use serve_support::*;

/// One GET over a fresh connection: (status, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("a read timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_reads_with_a_token_made_by_http_token() {
    let dir = tempfile::tempdir().unwrap();
    let key = operator_key(dir.path());
    let made = cli_support::ota(dir.path(), &["http-token"]).ok();
    let token = made
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ota_"))
        .unwrap_or_else(|| panic!("no token in:\n{}", made.stdout))
        .to_string();
    let line = made
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("read_tokens = "))
        .unwrap_or_else(|| panic!("no config line in:\n{}", made.stdout))
        .to_string();
    assert!(
        !line.contains(&token),
        "the config line holds the token itself"
    );
    // --hash gives the same line for the same token.
    let hashed = cli_support::ota_stdin(dir.path(), &["http-token", "--hash"], &token).ok();
    assert!(hashed.stdout.contains(&line), "{}", hashed.stdout);

    let (mqtt, http) = (free_port(), free_port());
    let config = write_config(
        dir.path(),
        &format!(
            "[broker]\nlisten = \"127.0.0.1:{mqtt}\"\nallow_anonymous = true\nsegment_size = 1048576\nsegment_count = 3\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n{line}\n"
        ),
    );
    let serve = Serve::start(&config);
    let _ops = wait_ready(mqtt, &key).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], http));

    let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/api/v1/fleet", None))
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let t = token.clone();
    let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/api/v1/fleet", Some(&t)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let fleet: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(fleet["registered"], serde_json::json!(0), "{body}");
    let t = token.clone();
    let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/metrics", Some(&t)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\nota_commands_accepted_total "), "{body}");

    let exit = serve.terminate().await;
    assert!(exit.success(), "ota serve exits 0 on SIGTERM: {exit:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener outlived ota serve"
    );
}

#[test]
fn serve_refuses_a_bad_http_section_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    operator_key(dir.path());
    let cases = [
        ("[http]\nlisten = \"nope\"\n", "[http] listen"),
        (
            "[http]\nlisten = \"127.0.0.1:1\"\nread_tokens = [\"plain-token\"]\n",
            "[http] read_tokens[0]",
        ),
        ("[http]\nlisten = \"127.0.0.1:1\"\n", "[http] read_tokens"),
        ("[http]\nlisten = \"127.0.0.1:1\"\ntoken = 1\n", "token"),
    ];
    for (section, key) in cases {
        // An anonymous embedded broker, so that only [http] is wrong.
        write_config(
            dir.path(),
            &format!("[broker]\nallow_anonymous = true\n{section}"),
        );
        cli_support::ota(dir.path(), &["serve", "--config", "ota.toml"]).fails_with(1, &[key]);
    }
}
