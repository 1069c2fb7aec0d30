//! The real binary: gen, build, query, config and demo on a temp folder.

use crate::util::{ok_stdout, repo_file, Workspace};

fn built() -> Workspace {
    let ws = Workspace::new();
    ok_stdout(&ws.run(&[
        "gen",
        "watch",
        "--files",
        "2",
        "--rows-per-file",
        "3000",
        "--seed",
        "9",
    ]));
    ok_stdout(&ws.run(&["build", "--watch", "watch", "--state", "state"]));
    ws
}

#[test]
fn gen_is_deterministic() {
    let a = Workspace::new();
    let b = Workspace::new();
    for ws in [&a, &b] {
        ok_stdout(&ws.run(&[
            "gen",
            "d",
            "--files",
            "2",
            "--rows-per-file",
            "500",
            "--seed",
            "4",
        ]));
    }
    for name in ["events-000.csv", "events-001.csv"] {
        let x = std::fs::read(a.tmp.path().join("d").join(name)).unwrap();
        let y = std::fs::read(b.tmp.path().join("d").join(name)).unwrap();
        assert_eq!(x, y, "{name}");
    }
}

#[test]
fn query_file_with_an_array_prints_one_line_per_query() {
    let ws = built();
    let refs = repo_file("docs/reference-queries.json");
    let refs = refs.to_str().expect("a UTF-8 path");
    let out = ok_stdout(&ws.run(&["query", "--state", "state", "-f", refs]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        assert_eq!(l["ok"], true, "{l}");
        assert!(l["source"].as_str().unwrap().starts_with("rollup:"), "{l}");
        assert_eq!(l["generation"], 1);
        assert!(l["elapsed_us"].is_u64());
    }
}

#[test]
fn query_formats_csv_and_arrow() {
    let ws = built();
    let q = r#"{"select":["type",{"COUNT":"*"}],"group_by":["type"]}"#;
    let json = ok_stdout(&ws.run(&["query", "--state", "state", q]));
    let json: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let csv = ok_stdout(&ws.run(&["query", "--state", "state", "--format", "csv", q]));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("type,COUNT(*)"));
    let rows = json["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert_eq!(csv.lines().count(), rows.len() + 1, "one CSV line per row");
    for (line, row) in lines.zip(rows) {
        assert_eq!(line, format!("{},{}", row[0].as_str().unwrap(), row[1]));
    }
    let out = ws.run(&["query", "--state", "state", "--format", "arrow", q]);
    assert!(out.status.success());
    let reader = arrow_ipc::reader::StreamReader::try_new(&out.stdout[..], None).unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, rows.len());
}

#[test]
fn invalid_query_fails_with_a_one_line_reason() {
    let ws = built();
    let out = ws.run(&[
        "query",
        "--state",
        "state",
        r#"{"select":["nope"],"limit":1}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("invalid_query") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn query_without_state_says_what_to_do() {
    let ws = Workspace::new();
    let out = ws.run(&[
        "query",
        "--state",
        "nowhere",
        r#"{"select":[{"COUNT":"*"}]}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("rollupd build"), "{err}");
}

#[test]
fn relative_and_absolute_watch_paths_are_the_same_folder() {
    let ws = built();
    let abs = ws.tmp.path().join("watch");
    let out = ws.run(&[
        "build",
        "--watch",
        abs.to_str().unwrap(),
        "--state",
        "state",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&ok_stdout(&out)).unwrap();
    assert_eq!(report["moved"], 0, "{report}");
    assert_eq!(report["bytes_parsed"], 0, "{report}");
}

#[test]
fn demo_builds_answers_the_reference_queries_and_stops_without_a_terminal() {
    let ws = Workspace::new();
    let out = ws.run(&["demo", "--files", "2", "--rows-per-file", "3000"]);
    let text = ok_stdout(&out);
    for n in 1..=5 {
        assert!(text.contains(&format!("\n{n}. ")), "{text}");
    }
    assert_eq!(text.matches(" from rollup:").count(), 5, "{text}");
    assert!(text.contains("Folded 2 files (6000 rows"), "{text}");
    assert!(text.contains("status --state"), "{text}");
    assert!(ws.tmp.path().join("state/inbox/events-000.csv").exists());
    assert!(!ws.tmp.path().join("state/rollupd.sock").exists());
    // Again: nothing to fold.
    let text = ok_stdout(&ws.run(&["demo", "--files", "2", "--rows-per-file", "3000"]));
    assert!(
        text.contains("Already folded: 2 files, 6000 rows"),
        "{text}"
    );
}

#[test]
fn config_prints_the_file_over_defaults_with_flags_over_both() {
    let ws = Workspace::new();
    let file = ws.tmp.path().join("rollupd.toml");
    std::fs::write(
        &file,
        "watch = \"csv\"\ntime_zone = \"Asia/Tokyo\"\nsettle_ms = 250\n",
    )
    .unwrap();
    let out = ws.run(&["config", "--config", "rollupd.toml", "--settle-ms", "500"]);
    let config: toml::Table = toml::from_str(&ok_stdout(&out)).unwrap();
    let watch = ws.tmp.path().join("csv");
    assert_eq!(config["watch"].as_str(), watch.to_str());
    assert_eq!(config["time_zone"].as_str(), Some("Asia/Tokyo"));
    assert_eq!(config["settle_ms"].as_integer(), Some(500));
    assert_eq!(config["rollups"].as_array().unwrap().len(), 9);

    let out = ws.run(&["config", "--config", "missing.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.toml"), "{err}");
    std::fs::write(&file, "time_zone = \"Mars/Olympus\"\n").unwrap();
    let out = ws.run(&["config", "--config", "rollupd.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Mars/Olympus"),
        "{err}"
    );
}

#[test]
fn version_names_the_bundled_duckdb() {
    let out = ok_stdout(&Workspace::new().run(&["--version"]));
    assert!(
        out.starts_with(concat!("rollupd ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(
        out.contains("DuckDB v") && out.contains("release build"),
        "{out}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let ws = Workspace::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok_stdout(&ws.run(&["completions", shell]));
        assert!(
            script.contains("completions") && script.contains("follow"),
            "{shell}"
        );
    }
    assert!(!ws.run(&["completions", "cmd.exe"]).status.success());
    let man = ok_stdout(&ws.run(&["man"]));
    assert!(
        man.starts_with(".ie") && man.contains(".TH rollupd 1"),
        "{man}"
    );
    for sub in ["query", "explain", "advise", "completions", "man"] {
        assert!(man.contains(sub), "the man page lists {sub}");
    }
}

/// `rollupd man | head`: output to a pipe whose reader has gone ended in an error
/// message and a failure.
#[test]
fn a_reader_closing_the_pipe_made_output_fail() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollupd"))
        .arg("man")
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
