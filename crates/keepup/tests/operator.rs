//! The operator surface against real agents in namespaces (issue #11):
//! `keepup status --all` from any node, with a node cut off, and the API
//! attacks a web page or a relay can make, answered without effect.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::{can_run, keepup, Builder, Cluster};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `keepup status --all --json` run inside node `on`: (exit success, document).
fn status_all(c: &Cluster, on: &str) -> (bool, Value) {
    let out = c
        .lab
        .command(on, keepup())
        .unwrap()
        .args([
            "-c",
            c.config.to_str().unwrap(),
            "--node",
            on,
            "status",
            "--all",
            "--json",
        ])
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --all on {on}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), doc)
}

fn problems(doc: &Value) -> Vec<String> {
    doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// Retries `status --all` on `on` until `ok` holds (the views converge
/// within a few heartbeats), returning the last answer.
fn wait_all(c: &Cluster, on: &str, what: &str, ok: impl Fn(bool, &[String]) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let (success, doc) = status_all(c, on);
        let p = problems(&doc);
        if ok(success, &p) {
            return doc;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{what}: still {p:#?} (exit success {success})\n{}",
            c.all_logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// Issue #11: "`status --all` in a 3-node lab with one node cut off".
#[test]
fn status_all_shows_every_view_and_names_a_cut_off_node() {
    if !can_run("status_all_shows_every_view_and_names_a_cut_off_node") {
        return;
    }
    let mut c = Builder::new(&[("a", 300), ("b", 200), ("c", 100)])
        .extra("[api]\nlisten = \"0.0.0.0:7947\"\n")
        .build("statusall");
    c.start_all();
    c.wait_acquired("a", Duration::from_secs(10));
    for n in ["a", "b", "c"] {
        c.wait_api(n);
    }
    // Every node answers and they agree, asked from any of them.
    for on in ["b", "c"] {
        let doc = wait_all(&c, on, "healthy cluster", |ok, p| ok && p.is_empty());
        for n in ["a", "b", "c"] {
            assert_eq!(doc["nodes"][n]["node"], n, "{doc:#}");
        }
        assert_eq!(doc["nodes"]["b"]["cluster"]["groups"][0]["owner"], "a");
    }
    // The text form lines the views up.
    let text = c
        .lab
        .run(
            "b",
            keepup(),
            &[
                "-c",
                c.config.to_str().unwrap(),
                "--node",
                "b",
                "status",
                "--all",
            ],
        )
        .unwrap();
    assert!(text.contains("group site owner"), "{text}");
    assert!(text.contains("PROBLEMS none"), "{text}");
    // The agent serves the same comparison to the dashboard.
    let cluster = |on: &str| -> Value {
        let out = c
            .lab
            .run(
                on,
                "curl",
                &["-s", "-m", "5", "http://127.0.0.1:7947/v1/cluster"],
            )
            .unwrap();
        serde_json::from_str(&out).unwrap()
    };
    let doc = cluster("a");
    assert_eq!(problems(&doc), Vec::<String>::new(), "{doc:#}");
    assert_eq!(doc["table"]["nodes"], serde_json::json!(["a", "b", "c"]));

    // Cut c off (its loopback stays open): from a, c does not answer; from
    // c, a and b do not, and c's own view is shown.
    c.lab.partition("c", true).unwrap();
    let doc = wait_all(&c, "a", "c cut off, seen from a", |ok, p| {
        !ok && p
            .iter()
            .any(|x| x.starts_with("c: no answer from 10.77.0.3:7947"))
    });
    assert_eq!(doc["nodes"]["a"]["node"], "a");
    assert!(doc["nodes"]["c"]["error"].is_string(), "{doc:#}");
    let doc = cluster("b");
    assert!(
        problems(&doc)
            .iter()
            .any(|p| p.starts_with("c: no answer from 10.77.0.3:7947")),
        "{doc:#}"
    );
    let doc = wait_all(&c, "c", "c cut off, seen from c", |ok, p| {
        !ok && p.iter().any(|x| x.starts_with("a: no answer"))
            && p.iter().any(|x| x.starts_with("b: no answer"))
            && p.iter().any(|x| x.contains("c sees no raft leader"))
    });
    assert_eq!(doc["nodes"]["c"]["node"], "c");
    c.lab.partition("c", false).unwrap();
    wait_all(&c, "c", "healed", |ok, p| ok && p.is_empty());
}

/// `curl -X POST` inside `on` with `auth` and `content_type`: the HTTP status.
fn post(c: &Cluster, on: &str, auth: &str, content_type: &str, url: &str) -> u16 {
    let ct = format!("Content-Type: {content_type}");
    curl(
        c,
        on,
        &["-X", "POST", "-H", auth, "-H", &ct, "--data", "{}", url],
    )
}

/// `curl` inside `on`: the HTTP status it got.
fn curl(c: &Cluster, on: &str, args: &[&str]) -> u16 {
    let mut all = vec![
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
    ];
    all.extend_from_slice(args);
    c.lab.run(on, "curl", &all).unwrap().trim().parse().unwrap()
}

// Issue #11: "the API attacks above (foreign Origin/Host, text/plain, no
// token, half-open flood) each answered without effect" — against a real
// agent, checked by its status afterwards.
#[test]
fn api_attacks_on_a_real_agent_change_nothing() {
    if !can_run("api_attacks_on_a_real_agent_change_nothing") {
        return;
    }
    let mut c = Builder::new(&[("a", 200), ("b", 100)])
        .extra("[api]\nlisten = \"0.0.0.0:7947\"\nmax_connections = 32\n")
        .build("apiattack");
    c.start_all();
    c.wait_acquired("a", Duration::from_secs(10));
    let url = "http://127.0.0.1:7947/v1/standby";
    // A web page's form POST.
    let form = [
        "-X",
        "POST",
        "-H",
        "Origin: http://evil.example",
        "-H",
        "Content-Type: text/plain",
        "--data",
        "x=1",
        url,
    ];
    assert_eq!(curl(&c, "a", &form), 403);
    // No Origin, no token (a script on this host, an old browser).
    assert_eq!(
        curl(
            &c,
            "a",
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                "{}",
                url
            ]
        ),
        401
    );
    // DNS rebinding: a foreign name in Host.
    assert_eq!(
        curl(
            &c,
            "a",
            &[
                "-H",
                "Host: evil.example:7947",
                "http://127.0.0.1:7947/v1/status"
            ]
        ),
        421
    );
    // From the client namespace: reads need a token.
    assert_eq!(
        curl(&c, "client", &["http://10.77.0.1:7947/v1/status"]),
        401
    );
    // With the control token but not JSON.
    let token = c
        .lab
        .run(
            "a",
            keepup(),
            &["-c", c.config.to_str().unwrap(), "api-token"],
        )
        .unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    let remote = "http://10.77.0.1:7947";
    assert_eq!(
        post(
            &c,
            "client",
            &auth,
            "text/plain",
            &format!("{remote}/v1/standby")
        ),
        415
    );
    // A half-open flood from the client namespace: 500 connections that
    // never finish their headers.
    let flood = c
        .lab
        .command("client", "python3")
        .unwrap()
        .args([
            "-c",
            "import socket,time\nss=[]\nfor i in range(500):\n  s=socket.socket(); s.settimeout(2)\n  try:\n    s.connect(('10.77.0.1',7947)); s.send(b'GET / HTTP/1.1\\r\\nHost: ')\n  except OSError: pass\n  ss.append(s)\ntime.sleep(3)\n",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Meanwhile the agent works and answers loopback (its own slots).
    let st = c.status("a");
    assert_eq!(st["node"], "a");
    let mut flood = flood;
    flood.wait().unwrap();
    // Nothing moved: a is not in standby and still holds the group.
    let st = c.status("a");
    assert_eq!(Cluster::node_in(&st, "a")["standby"], false, "{st:#}");
    assert_eq!(st["cluster"]["groups"][0]["owner"], "a");
    assert_eq!(c.vip_holders(), vec!["a".to_string()]);
    // And the real control path still works with the token and JSON.
    assert_eq!(
        post(
            &c,
            "client",
            &auth,
            "application/json",
            &format!("{remote}/v1/online")
        ),
        200
    );
}

/// A message to NOTIFY_SOCKET: when it came (since start) and its text.
type Note = (Duration, String);

// Issue #11: "`Type=notify` with readiness sent once heartbeats run and
// resources are settled, `WatchdogSec` fed from the heartbeat thread". The
// test plays systemd: a datagram socket as NOTIFY_SOCKET and WATCHDOG_USEC
// set, as systemd passes them. A stopped agent stops feeding the watchdog.
#[test]
fn the_agent_tells_systemd_it_is_ready_and_feeds_the_watchdog() {
    if !can_run("the_agent_tells_systemd_it_is_ready_and_feeds_the_watchdog") {
        return;
    }
    let mut c = Builder::new(&[("a", 200), ("b", 100)]).build("sdnotify");
    let sock_path = c.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    c.start("b");
    let t0 = Instant::now();
    // systemd also names the PID the watchdog is for; the shell's $$ is the
    // agent's PID once it execs.
    c.start_custom(
        "a",
        &["sh", "-c", "WATCHDOG_PID=$$ exec \"$@\"", "sh"],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    // Messages until `until` holds or 15 s pass: (time since start, text).
    let mut got: Vec<Note> = Vec::new();
    let read_until = |got: &mut Vec<Note>, stop: &dyn Fn(&[Note]) -> bool| {
        let end = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        while Instant::now() < end && !stop(got) {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push((t0.elapsed(), String::from_utf8_lossy(&buf[..n]).to_string()));
            }
        }
    };
    read_until(&mut got, &|g| g.iter().any(|(_, m)| m.contains("READY=1")));
    let ready = got
        .iter()
        .find(|(_, m)| m.contains("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 within 15 s: {got:?}\n{}", c.all_logs()))
        .clone();
    // Ready means settled: a holds the group by then.
    let st = c.status("a");
    assert_eq!(st["cluster"]["groups"][0]["owner"], "a", "{st:#}");
    assert!(
        ready.1.contains("STATUS=2/2 nodes up; holding site"),
        "{ready:?}"
    );
    eprintln!(
        "READY=1 after {:?}: {}",
        ready.0,
        ready.1.replace('\n', " ")
    );
    // The watchdog: a ping at least every 200 ms (half of WATCHDOG_USEC).
    let before = got.len();
    std::thread::sleep(Duration::from_millis(1000));
    read_until(&mut got, &|g| g.len() >= before + 3);
    let pings = got[before..]
        .iter()
        .filter(|(_, m)| m.trim() == "WATCHDOG=1")
        .count();
    assert!(pings >= 3, "watchdog pings in ~1 s: {:?}", &got[before..]);
    // SIGSTOP: the pings stop (systemd would now restart the agent).
    c.signal("a", "-STOP");
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 4096];
    while sock.recv(&mut buf).is_ok() {}
    let mut during = 0;
    let end = Instant::now() + Duration::from_millis(800);
    while Instant::now() < end {
        if sock.recv(&mut buf).is_ok() {
            during += 1;
        }
    }
    c.signal("a", "-CONT");
    assert_eq!(during, 0, "a stopped agent kept pinging the watchdog");
    let after = got.len();
    read_until(&mut got, &|g| {
        g[after..].iter().any(|(_, m)| m.trim() == "WATCHDOG=1")
    });
    assert!(
        got[after..].iter().any(|(_, m)| m.trim() == "WATCHDOG=1"),
        "no ping after SIGCONT"
    );
    // SIGTERM: STOPPING=1 before the release.
    let after = got.len();
    c.signal("a", "-TERM");
    read_until(&mut got, &|g| {
        g[after..].iter().any(|(_, m)| m.contains("STOPPING=1"))
    });
    assert!(
        got[after..].iter().any(|(_, m)| m.contains("STOPPING=1")),
        "{:?}",
        &got[after..]
    );
}

// Issue #11: "a `keepup` system user where the agent can run without full
// root (document the capabilities it keeps)". The agent runs as nobody with
// only the unit's ambient capabilities (setpriv does what systemd's User= and
// AmbientCapabilities= do) and still takes the floating IP, sends its
// gratuitous ARPs and runs its heartbeat thread at real-time priority.
#[test]
fn the_agent_runs_as_an_unprivileged_user_with_the_units_capabilities() {
    if !can_run("the_agent_runs_as_an_unprivileged_user_with_the_units_capabilities")
        || !keepup_testkit::require::has_program(
            "the_agent_runs_as_an_unprivileged_user_with_the_units_capabilities",
            "setpriv",
        )
    {
        return;
    }
    let mut c = Builder::new(&[("a", 200), ("b", 100)]).build("unpriv");
    // The files the unit's user must own (keepup init gives them to it).
    for p in [
        c.dir.join("key"),
        c.config.clone(),
        c.state.join("a"),
        c.dir.clone(),
    ] {
        std::fs::create_dir_all(c.state.join("a")).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let caps = "+net_admin,+net_raw,+net_bind_service,+sys_nice,+ipc_lock";
    c.start_custom(
        "a",
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all,{caps}"),
            &format!("--ambient-caps=-all,{caps}"),
            &format!("--bounding-set=-all,{caps}"),
            "--no-new-privs",
        ],
        &[],
    );
    c.start("b");
    c.wait_vip_on("a", Duration::from_secs(10));
    let pid = c.pid("a").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    let st = c.status("a");
    assert_eq!(
        st["realtime"],
        true,
        "SCHED_FIFO and mlockall with CAP_SYS_NICE and CAP_IPC_LOCK:\n{}",
        c.log("a")
    );
    assert_eq!(st["cluster"]["groups"][0]["owner"], "a");
    // A failover back and forth works the same way.
    c.kill9("a");
    c.wait_vip_on("b", Duration::from_secs(10));
}

// Issue #11: "backend health transitions with pool, backend and reason in
// logs, status timeline, events API and dashboard". A backend with nothing
// listening goes down: the log line, `/v1/events` and `keepup status` all
// name the pool, the backend and the failed check.
#[test]
fn a_backend_going_down_is_in_the_log_and_the_timeline_with_its_reason() {
    if !can_run("a_backend_going_down_is_in_the_log_and_the_timeline_with_its_reason") {
        return;
    }
    let vip = lab::VIP;
    let mut c = Builder::new(&[("a", 200), ("b", 100)])
        .extra(&format!(
            "[lb]\n[[lb.frontend]]\nname = \"www\"\nbind = \"{vip}:8000\"\npool = \"web\"\n\n\
             [[lb.pool]]\nname = \"web\"\n[lb.pool.health]\ntype = \"tcp\"\ninterval_ms = 100\ntimeout_ms = 100\nfall = 2\n\n\
             [[lb.pool.backend]]\nname = \"alive\"\naddress = \"10.77.0.1:80\"\n\n\
             [[lb.pool.backend]]\nname = \"gone\"\naddress = \"10.77.0.200:81\"\n"
        ))
        .build("lbevents");
    c.start_all();
    c.wait_acquired("a", Duration::from_secs(10));
    let t0 = Instant::now();
    let event = loop {
        let out = c
            .lab
            .run(
                "a",
                "curl",
                &["-s", "-m", "2", "http://127.0.0.1:7947/v1/events"],
            )
            .unwrap();
        let events: Value = serde_json::from_str(&out).unwrap();
        if let Some(e) = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["kind"] == "backend_down")
        {
            break e.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no backend_down event: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(event["event"]["pool"], "web");
    assert_eq!(event["event"]["backend"], "gone");
    assert_eq!(event["node"], "a");
    let reason = event["event"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("2 TCP checks failed in a row, last: connect 10.77.0.200:81"),
        "{reason}"
    );
    let text = event["text"].as_str().unwrap();
    assert!(
        text.starts_with("pool web: backend gone (10.77.0.200:81) DOWN: "),
        "{text}"
    );
    // The status document (and with it the dashboard and `keepup status`)
    // carries it in the timeline.
    let st = c.status("a");
    assert!(
        st["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["text"] == text),
        "{st:#}"
    );
    let screen = c
        .lab
        .run("a", keepup(), &["-c", c.config.to_str().unwrap(), "status"])
        .unwrap();
    assert!(
        screen.contains("backend gone (10.77.0.200:81) DOWN"),
        "{screen}"
    );
    let log = c.log("a");
    assert!(
        log.lines().any(|l| l.contains("backend down")
            && l.contains("pool=web")
            && l.contains("backend=gone")
            && l.contains("reason=")),
        "{log}"
    );
}

// Issue #11: "optional TLS for the API (rustls, reusing the LB's
// certificate handling)". With [api.tls] the agents serve HTTPS only; the
// keepup commands and the agents asking each other trust the configured
// certificate, and nothing answers in clear.
#[test]
fn the_api_over_https_serves_the_commands_and_nothing_in_clear() {
    if !can_run("the_api_over_https_serves_the_commands_and_nothing_in_clear") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("keepup-apitls-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = ["10.77.0.1", "10.77.0.2", "10.77.0.3", "127.0.0.1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert_file, key_file) = (dir.join("api.pem"), dir.join("api.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let mut c = Builder::new(&[("a", 300), ("b", 200), ("c", 100)])
        .extra(&format!(
            "[api]\nlisten = \"0.0.0.0:7947\"\n[api.tls]\ncert = {:?}\nkey = {:?}\n",
            cert_file.display().to_string(),
            key_file.display().to_string()
        ))
        .build("apitls");
    c.start_all();
    // `keepup status` (inside wait_acquired) goes over HTTPS.
    c.wait_acquired("a", Duration::from_secs(10));
    for n in ["a", "b", "c"] {
        c.wait_api(n);
    }
    let doc = wait_all(&c, "b", "every node over HTTPS", |ok, p| ok && p.is_empty());
    assert_eq!(doc["nodes"]["c"]["node"], "c");
    // The agent's own /v1/cluster asks its peers over HTTPS too.
    let token = c
        .lab
        .run(
            "a",
            keepup(),
            &["-c", c.config.to_str().unwrap(), "api-token", "--read-only"],
        )
        .unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    let cacert = cert_file.to_str().unwrap();
    let out = c
        .lab
        .run(
            "client",
            "curl",
            &[
                "-s",
                "-m",
                "5",
                "--cacert",
                cacert,
                "-H",
                &auth,
                "https://10.77.0.1:7947/v1/cluster",
            ],
        )
        .unwrap();
    let cluster: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(problems(&cluster), Vec::<String>::new(), "{cluster:#}");
    // Control through the CLI works over HTTPS.
    let out = c
        .lab
        .run(
            "a",
            keepup(),
            &["-c", c.config.to_str().unwrap(), "--node", "a", "online"],
        )
        .unwrap();
    assert!(out.contains("online"), "{out}");
    // Plain HTTP gets no answer at all.
    let plain = c
        .lab
        .command("client", "curl")
        .unwrap()
        .args([
            "-s",
            "-m",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://10.77.0.1:7947/v1/status",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        "000",
        "an answer in clear"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
