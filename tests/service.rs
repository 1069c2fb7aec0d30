//! `rollupd install` / `uninstall`: the rendered launchd plist and systemd unit (parsed as
//! XML, checked by `systemd-analyze verify` when it is there), and the plans carried out
//! against a temporary HOME without running launchctl or systemctl.

use std::path::{Path, PathBuf};
use std::process::Command;

use rollupd::app::service::{
    install_plan, render, uninstall_plan, unit_path, Plan, Platform, ServicePaths,
};

use crate::util::rollupd;

/// A name with spaces and characters XML, systemd and shells treat specially, all of which
/// systemd accepts in the path of a program.
const SPECIAL: &str = "Application Support & <Co> 100% $HOME;x";
/// Worse: with the quotes and backslash systemd refuses in a program path.
const AWKWARD: &str = "Application Support & <Co> \"q\" it's 100% $HOME;x\\y";

/// Service paths rooted at `home`, with the awkward name in every path.
fn paths_in(home: &Path, binary: PathBuf) -> ServicePaths {
    let support = home.join("Library").join(AWKWARD).join("rollupd");
    ServicePaths {
        binary,
        config: support.join("config.toml"),
        state: support.join("state"),
        socket: support.join("state").join("rollupd.sock"),
        watch: home.join("ad events"),
        log_dir: home.join("Library/Logs").join(AWKWARD),
        home: home.to_path_buf(),
        xdg_config_home: None,
    }
}

fn awkward_paths() -> ServicePaths {
    paths_in(
        &Path::new("/Users").join(format!("zoë {AWKWARD}")),
        Path::new("/opt").join(AWKWARD).join("bin/rollupd"),
    )
}

fn text(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The values of a plist `<dict>`, by key.
fn dict_entries<'a, 'i>(dict: roxmltree::Node<'a, 'i>) -> Vec<(String, roxmltree::Node<'a, 'i>)> {
    assert_eq!(dict.tag_name().name(), "dict");
    let children: Vec<_> = dict.children().filter(|n| n.is_element()).collect();
    assert_eq!(children.len() % 2, 0, "a dict alternates keys and values");
    children
        .chunks(2)
        .map(|kv| {
            assert_eq!(kv[0].tag_name().name(), "key");
            (kv[0].text().unwrap_or("").to_string(), kv[1])
        })
        .collect()
}

fn entry<'a, 'i>(
    entries: &[(String, roxmltree::Node<'a, 'i>)],
    key: &str,
) -> roxmltree::Node<'a, 'i> {
    let found: Vec<_> = entries.iter().filter(|(k, _)| k == key).collect();
    assert_eq!(found.len(), 1, "exactly one {key}");
    found[0].1
}

fn string_of(node: roxmltree::Node) -> String {
    assert_eq!(node.tag_name().name(), "string", "{node:?}");
    node.text().unwrap_or("").to_string()
}

#[test]
fn the_plist_is_a_launch_agent_with_the_paths_exactly() {
    let p = awkward_paths();
    let xml = render(Platform::Launchd, &p);
    assert!(!xml.contains("{{"), "{xml}");
    let doc = roxmltree::Document::parse_with_options(
        &xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "plist");
    assert_eq!(root.attribute("version"), Some("1.0"));
    let top: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(top.len(), 1);
    let entries = dict_entries(top[0]);

    assert_eq!(string_of(entry(&entries, "Label")), "dev.rollupd");
    let args = entry(&entries, "ProgramArguments");
    assert_eq!(args.tag_name().name(), "array");
    let args: Vec<String> = args
        .children()
        .filter(|n| n.is_element())
        .map(string_of)
        .collect();
    assert_eq!(
        args,
        [
            text(&p.binary),
            "run".into(),
            "--config".into(),
            text(&p.config)
        ]
    );
    assert_eq!(entry(&entries, "RunAtLoad").tag_name().name(), "true");
    let keep_alive = entry(&entries, "KeepAlive");
    match keep_alive.tag_name().name() {
        "true" => {}
        "dict" => {
            let ka = dict_entries(keep_alive);
            assert_eq!(entry(&ka, "SuccessfulExit").tag_name().name(), "false");
        }
        other => panic!("KeepAlive is <{other}>"),
    }
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let path = PathBuf::from(string_of(entry(&entries, key)));
        assert_eq!(path.parent(), Some(p.log_dir.as_path()), "{key}");
    }
    assert_ne!(
        string_of(entry(&entries, "StandardOutPath")),
        string_of(entry(&entries, "StandardErrorPath"))
    );
    assert_eq!(string_of(entry(&entries, "ProcessType")), "Background");
    assert_eq!(
        string_of(entry(&entries, "WorkingDirectory")),
        text(&p.home)
    );
    let env = dict_entries(entry(&entries, "EnvironmentVariables"));
    assert_eq!(string_of(entry(&env, "RUST_LOG")), "info");
}

/// The unit's `[section]` → `key=value` lines, in order.
fn unit_entries(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

fn unit_value(entries: &[(String, String, String)], section: &str, key: &str) -> String {
    let found: Vec<_> = entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {key} in [{section}]");
    found[0].2.clone()
}

#[test]
fn the_unit_has_the_service_keys_and_quoted_paths() {
    let p = awkward_paths();
    let unit = render(Platform::Systemd, &p);
    assert!(!unit.contains("{{"), "{unit}");
    let e = unit_entries(&unit);
    assert!(!unit_value(&e, "Unit", "Description").is_empty());
    assert_eq!(unit_value(&e, "Service", "Restart"), "on-failure");
    assert!(
        unit_value(&e, "Service", "RestartSec")
            .parse::<u32>()
            .unwrap()
            > 0
    );
    assert_eq!(unit_value(&e, "Service", "KillSignal"), "SIGTERM");
    assert!(
        unit_value(&e, "Service", "TimeoutStopSec")
            .parse::<u32>()
            .unwrap()
            > 0
    );
    assert_eq!(unit_value(&e, "Install", "WantedBy"), "default.target");
    assert!(!e
        .iter()
        .any(|(_, k, _)| k == "StandardOutput" || k == "StandardError"));
    // An argument: quoted, C escapes, `%` and `$` doubled.
    let arg = |path: &Path| {
        format!(
            "\"{}\"",
            text(path)
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
                .replace('$', "$$")
        )
    };
    // A program path systemd refuses goes through sh, as an argument.
    assert_eq!(
        unit_value(&e, "Service", "ExecStart"),
        format!(
            r#"/bin/sh -c "exec \"$$0\" \"$$@\"" {} run --config {}"#,
            arg(&p.binary),
            arg(&p.config)
        )
    );
    // Any other is the program itself: quoted, `%` doubled, `$` kept (systemd does not
    // expand variables in the program path).
    let mut q = p.clone();
    q.binary = Path::new("/opt").join(SPECIAL).join("bin/rollupd");
    let e = unit_entries(&render(Platform::Systemd, &q));
    assert_eq!(
        unit_value(&e, "Service", "ExecStart"),
        format!(
            "\"/opt/{}/bin/rollupd\" run --config {}",
            SPECIAL.replace('%', "%%"),
            arg(&p.config)
        )
    );
}

/// The rendered unit, with `binary`, written to `dir` for systemd-analyze.
fn unit_file(dir: &Path, p: &ServicePaths) -> PathBuf {
    let file = dir.join("rollupd.service");
    std::fs::write(&file, render(Platform::Systemd, p)).unwrap();
    file
}

/// Runs `systemd-analyze verify` on a unit file; None when systemd-analyze is not installed.
///
/// As a user unit first. `--user` needs a runtime folder (it fails with "Failed to lookup
/// RuntimeDirectory path" without `XDG_RUNTIME_DIR`, as in containers without a login
/// session), so it gets a private one. If the user manager still cannot be set up (no
/// unit-related message, "Failed to initialize manager"), the unit is verified as a system
/// unit, which needs no session: the same parser, the same checks of ExecStart.
fn verify(unit: &Path) -> Option<(bool, String)> {
    let runtime = tempfile::tempdir().unwrap();
    let attempt = |user: bool| {
        let mut cmd = Command::new("systemd-analyze");
        if user {
            cmd.arg("--user");
        }
        cmd.args(["--man=no", "verify"])
            .arg(unit)
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env("SYSTEMD_LOG_LEVEL", "info")
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
    };
    let out = match attempt(true) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        r => r.expect("run systemd-analyze"),
    };
    let mut output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut ok = out.status.success();
    if !ok && output.contains("Failed to initialize manager") && !mentions_unit(&output) {
        eprintln!(
            "systemd-analyze --user verify cannot run here ({output}); verifying as a system unit"
        );
        let out = attempt(false).expect("run systemd-analyze");
        output = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        ok = out.status.success();
    }
    Some((ok, output))
}

fn mentions_unit(output: &str) -> bool {
    output.lines().any(|l| l.contains("rollupd"))
}

fn assert_verifies(unit: &Path) {
    let Some((ok, output)) = verify(unit) else {
        eprintln!("systemd-analyze is not installed: the unit is not verified");
        return;
    };
    assert!(
        ok && !mentions_unit(&output),
        "systemd-analyze verify {}:\n{output}\n--- the unit:\n{}",
        unit.display(),
        std::fs::read_to_string(unit).unwrap()
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_rollupd"));
    let p = paths_in(&tmp.path().join("home"), binary);
    assert_verifies(&unit_file(tmp.path(), &p));
}

#[test]
fn systemd_analyze_finds_a_program_at_an_awkward_path() {
    // The program path is the one word systemd checks (it must be executable), so the real
    // binary is linked in under a name with special characters: verify fails unless the
    // quoting and escaping of ExecStart give back that path exactly.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(SPECIAL).join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("rollupd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rollupd"), &binary).unwrap();
    let p = paths_in(&tmp.path().join("home"), binary);
    let unit_dir = tmp.path().join("units");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let unit = unit_file(&unit_dir, &p);
    assert_verifies(&unit);

    // And the check has teeth: a program that is not there is reported.
    let mut missing = p.clone();
    missing.binary = dir.join("not-rollupd");
    let unit = unit_file(&unit_dir, &missing);
    if let Some((ok, output)) = verify(&unit) {
        assert!(!ok && output.contains("not-rollupd"), "{output}");
    }

    // A program path systemd would refuse still gives a unit that loads (through sh).
    let dir = tmp.path().join(AWKWARD).join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("rollupd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rollupd"), &binary).unwrap();
    assert_verifies(&unit_file(
        &unit_dir,
        &paths_in(&tmp.path().join("home"), binary),
    ));
}

/// ExecStart's words the way systemd reads them: split at spaces, double quotes with C
/// escapes, `%%` → `%`, and `$$` → `$` except in the program (enough for rendered units).
fn exec_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next().expect("unbalanced quote") {
                    '"' => break,
                    '\\' => match chars.next().unwrap() {
                        'x' => {
                            let hex: String = [chars.next().unwrap(), chars.next().unwrap()]
                                .iter()
                                .collect();
                            word.push(u8::from_str_radix(&hex, 16).unwrap() as char);
                        }
                        c => word.push(c),
                    },
                    c => word.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|&c| c != ' ') {
                word.push(c);
            }
        }
        let word = word.replace("%%", "%");
        words.push(if words.is_empty() {
            word
        } else {
            word.replace("$$", "$")
        });
    }
    words
}

#[test]
fn exec_start_runs_the_program_with_its_arguments() {
    // Runs ExecStart as read above with the program at an awkward path, a script that
    // prints its path and arguments: through sh for a path systemd refuses, directly else.
    let tmp = tempfile::tempdir().unwrap();
    for name in [AWKWARD, SPECIAL] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("show-args");
        std::fs::write(&program, "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\"\n").unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let p = paths_in(&tmp.path().join("home"), program.clone());
        let unit = render(Platform::Systemd, &p);
        let exec = unit_value(&unit_entries(&unit), "Service", "ExecStart");
        let argv = exec_words(&exec);
        assert_eq!(argv[0] == "/bin/sh", name == AWKWARD, "{exec}");
        let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert!(out.status.success(), "{exec}: {out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{}\nrun\n--config\n{}\n", text(&program), text(&p.config)),
            "{exec}"
        );
    }
}

/// Service paths in a temporary HOME whose watched folder holds a CSV and whose config
/// exists, as a user's would.
fn user_home(tmp: &Path) -> ServicePaths {
    let home = tmp.join("home dir");
    let p = paths_in(&home, PathBuf::from(env!("CARGO_BIN_EXE_rollupd")));
    std::fs::create_dir_all(&p.watch).unwrap();
    std::fs::write(p.watch.join("events.csv"), "ts,type\n").unwrap();
    std::fs::create_dir_all(p.config.parent().unwrap()).unwrap();
    std::fs::write(&p.config, "# settings\n").unwrap();
    p
}

/// Pretends the daemon ran: a state folder with a file, and a log.
fn pretend_it_ran(p: &ServicePaths) {
    std::fs::create_dir_all(p.state.join("rollups")).unwrap();
    std::fs::write(p.state.join("manifest.json"), "{}").unwrap();
    std::fs::create_dir_all(&p.log_dir).unwrap();
    std::fs::write(p.log_dir.join("rollupd.log"), "log\n").unwrap();
}

#[test]
fn install_and_uninstall_plans_in_a_temporary_home() {
    for platform in [Platform::Launchd, Platform::Systemd] {
        let tmp = tempfile::tempdir().unwrap();
        let p = user_home(tmp.path());
        let unit = unit_path(platform, &p);
        assert!(unit.starts_with(&p.home));

        let install = install_plan(platform, &p, 501);
        assert_eq!(install.write, vec![(unit.clone(), render(platform, &p))]);
        install.execute(false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&unit).unwrap(),
            render(platform, &p)
        );
        if platform == Platform::Launchd {
            assert!(p.log_dir.is_dir(), "launchd needs the log folder to exist");
        }
        // Installing again replaces the file and leaves no temp file beside it.
        install.execute(false).unwrap();
        let beside: Vec<_> = std::fs::read_dir(unit.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, [unit.file_name().unwrap()], "{platform:?}");

        pretend_it_ran(&p);
        uninstall_plan(platform, &p, 501, false)
            .execute(false)
            .unwrap();
        assert!(!unit.exists(), "{platform:?}");
        assert!(p.state.join("manifest.json").exists());
        assert!(p.log_dir.join("rollupd.log").exists());

        install.execute(false).unwrap();
        let purge = uninstall_plan(platform, &p, 501, true);
        assert!(purge.describe().contains(&text(&p.state)));
        purge.execute(false).unwrap();
        assert!(!unit.exists(), "{platform:?}");
        assert!(!p.state.exists(), "{platform:?}: purge removes the state");
        assert!(!p.log_dir.exists(), "{platform:?}: purge removes the logs");
        assert!(p.watch.join("events.csv").exists(), "the CSVs stay");
        assert!(p.config.exists(), "the config stays");
        // Uninstalling what is not there is fine.
        purge.execute(false).unwrap();
    }
}

#[test]
fn purge_keeps_a_state_folder_that_holds_the_watched_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = user_home(tmp.path());
    p.state = p.watch.join("..").join("ad events").join("..");
    pretend_it_ran(&p);
    let plan = uninstall_plan(Platform::Systemd, &p, 1000, true);
    assert!(!plan.remove.contains(&p.state), "{}", plan.describe());
    plan.execute(false).unwrap();
    assert!(p.watch.join("events.csv").exists());
}

#[test]
fn plans_run_the_service_manager() {
    let p = awkward_paths();
    let plist = text(&unit_path(Platform::Launchd, &p));
    let install = install_plan(Platform::Launchd, &p, 501);
    assert_eq!(
        install.run.last().unwrap(),
        &["launchctl", "bootstrap", "gui/501", &plist]
    );
    assert!(install.run[0].starts_with(&["launchctl".into(), "bootout".into()]));
    assert_eq!(install.may_fail, [0]);
    let uninstall = uninstall_plan(Platform::Launchd, &p, 501, false);
    assert_eq!(
        uninstall.run,
        [["launchctl", "bootout", "gui/501/dev.rollupd"]]
    );

    let install = install_plan(Platform::Systemd, &p, 1000);
    assert_eq!(install.run[0], ["systemctl", "--user", "daemon-reload"]);
    assert!(install.run.contains(&vec![
        "systemctl".into(),
        "--user".into(),
        "enable".into(),
        "rollupd.service".into()
    ]));
    assert!(install.may_fail.is_empty());
    let uninstall = uninstall_plan(Platform::Systemd, &p, 1000, false);
    assert_eq!(
        uninstall.run[0],
        ["systemctl", "--user", "disable", "--now", "rollupd.service"]
    );

    // describe shows every file in full and every command.
    let d = install_plan(Platform::Systemd, &p, 1000).describe();
    for line in render(Platform::Systemd, &p).lines() {
        assert!(d.contains(line), "{line}\n{d}");
    }
    assert!(d.contains("systemctl --user enable rollupd.service"), "{d}");
}

#[test]
fn a_failing_command_is_an_error_naming_it_unless_it_may_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let written = tmp.path().join("a/b/unit");
    let command: Vec<String> = ["sh", "-c", "echo boom >&2; exit 3"]
        .map(String::from)
        .to_vec();
    let plan = Plan {
        write: vec![(written.clone(), "x".into())],
        run: vec![command.clone()],
        remove: vec![tmp.path().join("gone")],
        ..Plan::default()
    };
    let e = plan.execute(true).unwrap_err().to_string();
    assert!(e.contains("sh -c") && e.contains("boom"), "{e}");
    assert!(written.exists(), "files are written before commands run");
    plan.execute(false).unwrap();

    let plan = Plan {
        run: vec![command, vec!["true".into()]],
        may_fail: vec![0],
        ..Plan::default()
    };
    plan.execute(true).unwrap();
    let missing = Plan {
        run: vec![vec!["rollupd-no-such-program".into()]],
        ..Plan::default()
    };
    let e = missing.execute(true).unwrap_err().to_string();
    assert!(e.contains("rollupd-no-such-program"), "{e}");
}

// CLI
//
// `rollupd install` / `uninstall`, wired in src/cli.rs (by the other engineer; these tests
// assume `install [--config F] [--dry-run] [--no-start]` and
// `uninstall [--purge] [--dry-run] [--no-stop]`, honoring HOME and XDG_CONFIG_HOME). They
// never start or stop anything: only --dry-run, --no-start and --no-stop.

/// Runs the binary in `dir` with HOME (and XDG_CONFIG_HOME unless given) set to temp paths.
fn rollupd_home(
    dir: &Path,
    home: &Path,
    xdg: Option<&Path>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollupd"));
    cmd.current_dir(dir).args(args).env("HOME", home);
    match xdg {
        Some(x) => cmd.env("XDG_CONFIG_HOME", x),
        None => cmd.env_remove("XDG_CONFIG_HOME"),
    };
    cmd.output().expect("run rollupd")
}

fn cli_paths(home: &Path, xdg: Option<&Path>) -> ServicePaths {
    let mut p = paths_in(home, PathBuf::from(env!("CARGO_BIN_EXE_rollupd")));
    p.xdg_config_home = xdg.map(Path::to_path_buf);
    p
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

#[test]
fn cli_install_dry_run_prints_the_plan_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = rollupd_home(tmp.path(), &home, None, &["install", "--dry-run"]);
    let stdout = crate::util::ok_stdout(&out);
    let platform = Platform::current();
    let unit = unit_path(platform, &cli_paths(&home, None));
    assert!(stdout.contains(&text(&unit)), "{stdout}");
    let key = match platform {
        Platform::Launchd => "<string>dev.rollupd</string>",
        Platform::Systemd => "ExecStart=",
    };
    assert!(stdout.contains(key), "{stdout}");
    let run = match platform {
        Platform::Launchd => "<string>--config</string>",
        Platform::Systemd => " run --config ",
    };
    assert!(stdout.contains(run), "{stdout}");
    assert_eq!(
        files_under(&home),
        Vec::<PathBuf>::new(),
        "dry run wrote files"
    );
    let out = rollupd_home(
        tmp.path(),
        &home,
        None,
        &["uninstall", "--purge", "--dry-run"],
    );
    let stdout = crate::util::ok_stdout(&out);
    assert!(stdout.contains(&text(&unit)), "{stdout}");
    assert_eq!(
        files_under(&home),
        Vec::<PathBuf>::new(),
        "dry run wrote files"
    );
}

#[test]
fn cli_install_no_start_writes_the_unit_and_uninstall_no_stop_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home with space");
    let xdg = tmp.path().join("xdg config");
    std::fs::create_dir_all(&home).unwrap();
    let config = tmp.path().join("my conf & co").join("rollupd.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "").unwrap();
    let config_arg = text(&config);
    let out = rollupd_home(
        tmp.path(),
        &home,
        Some(&xdg),
        &["install", "--no-start", "--config", &config_arg],
    );
    crate::util::ok_stdout(&out);
    let platform = Platform::current();
    let unit = unit_path(platform, &cli_paths(&home, Some(&xdg)));
    if platform == Platform::Systemd {
        assert!(unit.starts_with(&xdg), "{}", unit.display());
    }
    let content =
        std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    let mut p = cli_paths(&home, Some(&xdg));
    p.config = config.clone();
    // The config path as the unit spells it (the binary path is the CLI's business).
    let expected = render(platform, &p);
    let config_word = match platform {
        Platform::Launchd => expected.lines().find(|l| l.contains("rollupd.toml")),
        Platform::Systemd => expected
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=")?.split_once(" --config "))
            .map(|(_, config)| config),
    }
    .unwrap();
    assert!(content.contains(config_word), "{config_word}\n{content}");

    let out = rollupd_home(tmp.path(), &home, Some(&xdg), &["uninstall", "--no-stop"]);
    crate::util::ok_stdout(&out);
    assert!(!unit.exists());
    assert!(config.exists(), "uninstall keeps the config");
}

#[test]
fn cli_uninstall_of_nothing_installed_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = rollupd(tmp.path(), &["uninstall", "--help"]);
    crate::util::ok_stdout(&out);
    let out = rollupd_home(tmp.path(), &home, None, &["uninstall", "--no-stop"]);
    crate::util::ok_stdout(&out);
}
