//! `rollupd install` / `uninstall`: runs the daemon as a launchd agent (macOS) or a systemd
//! user service (elsewhere).
//!
//! The unit files are the repository's `launchd/rollupd.plist` and `systemd/rollupd.service`,
//! compiled in; `render` fills in their `{{name}}` placeholders, escaped for the format.
//! Planning is pure: `install_plan` and `uninstall_plan` say what to create, write, run and
//! remove, `Plan::describe` prints that for `--dry-run`, and `Plan::execute` does it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The launchd agent template (`launchd/rollupd.plist`).
pub const LAUNCHD_TEMPLATE: &str = include_str!("../../launchd/rollupd.plist");
/// The systemd user unit template (`systemd/rollupd.service`).
pub const SYSTEMD_TEMPLATE: &str = include_str!("../../systemd/rollupd.service");
/// The launchd label of the agent.
pub const LAUNCHD_LABEL: &str = "dev.rollupd";
/// The systemd unit name.
pub const SYSTEMD_UNIT: &str = "rollupd.service";

/// The service manager to install under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// A launchd agent in `~/Library/LaunchAgents` (macOS).
    Launchd,
    /// A systemd user unit in `$XDG_CONFIG_HOME/systemd/user`.
    Systemd,
}

impl Platform {
    /// launchd on macOS, systemd everywhere else.
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }
}

/// The paths a service install involves; absolute paths are expected throughout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePaths {
    /// The `rollupd` binary the service runs.
    pub binary: PathBuf,
    /// The config file passed as `run --config`.
    pub config: PathBuf,
    /// The state folder (removed by `uninstall --purge`).
    pub state: PathBuf,
    /// The daemon's socket (removed by `uninstall --purge`).
    pub socket: PathBuf,
    /// The watched folder of CSV files (never removed).
    pub watch: PathBuf,
    /// Where launchd writes the daemon's output (systemd uses the journal).
    pub log_dir: PathBuf,
    /// The user's home folder.
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME` as found in the environment; ignored unless absolute.
    pub xdg_config_home: Option<PathBuf>,
}

/// The unit file (systemd) or property list (launchd) for `p`, placeholders filled in.
pub fn render(platform: Platform, p: &ServicePaths) -> String {
    match platform {
        Platform::Launchd => fill(LAUNCHD_TEMPLATE, |name| {
            placeholder(p, name).map(|v| xml_escape(&v.to_string_lossy()))
        }),
        // Every placeholder of the unit is a word of ExecStart; `binary` is the program.
        Platform::Systemd => fill(SYSTEMD_TEMPLATE, |name| {
            placeholder(p, name).map(|v| match name {
                "binary" => systemd_program(v),
                _ => systemd_word(v, false),
            })
        }),
    }
}

/// The program of ExecStart. systemd refuses an executable path holding quotes,
/// backslashes or control characters, however they are escaped ("Executable name contains
/// special characters"); such a path (an apostrophe in a home folder is enough) is run
/// through `/bin/sh -c 'exec "$0" "$@"'`, where it is an ordinary argument.
fn systemd_program(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let refused = std::str::from_utf8(bytes).is_err()
        || bytes
            .iter()
            .any(|&b| b < 0x20 || b == 0x7f || b"\"'\\".contains(&b));
    if refused {
        format!(
            r#"/bin/sh -c "exec \"$$0\" \"$$@\"" {}"#,
            systemd_word(path, false)
        )
    } else {
        systemd_word(path, true)
    }
}

/// Where the unit goes: `~/Library/LaunchAgents/dev.rollupd.plist`, or
/// `$XDG_CONFIG_HOME/systemd/user/rollupd.service` (`~/.config` when unset or relative).
pub fn unit_path(platform: Platform, p: &ServicePaths) -> PathBuf {
    match platform {
        Platform::Launchd => p
            .home
            .join("Library/LaunchAgents")
            .join(format!("{LAUNCHD_LABEL}.plist")),
        Platform::Systemd => {
            let config_home = match &p.xdg_config_home {
                Some(x) if x.is_absolute() => x.clone(),
                _ => p.home.join(".config"),
            };
            config_home.join("systemd/user").join(SYSTEMD_UNIT)
        }
    }
}

/// What an install or uninstall does, in this order: create `mkdir`, write `write`, run
/// `run`, remove `remove`. `keep` lists what an uninstall deliberately leaves, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Folders to create (with their parents).
    pub mkdir: Vec<PathBuf>,
    /// Files to write atomically, with their content.
    pub write: Vec<(PathBuf, String)>,
    /// Commands to run, in order, each as program and arguments.
    pub run: Vec<Vec<String>>,
    /// Indices into `run` of commands whose failure is only a warning.
    pub may_fail: Vec<usize>,
    /// Files or folders (with their content) to remove; missing ones are fine.
    pub remove: Vec<PathBuf>,
    /// Paths left in place on purpose, with the reason.
    pub keep: Vec<(PathBuf, String)>,
}

/// Installs (or reinstalls) and starts the service for the user `uid`.
///
/// launchd: boot out any loaded agent (may fail: none loaded), enable, bootstrap the plist.
/// systemd: reload, enable, and restart so a reinstall runs the new unit.
pub fn install_plan(platform: Platform, p: &ServicePaths, uid: u32) -> Plan {
    let unit = unit_path(platform, p);
    let write = vec![(unit.clone(), render(platform, p))];
    match platform {
        Platform::Launchd => Plan {
            // launchd does not create the folder of StandardOutPath/StandardErrorPath.
            mkdir: vec![p.log_dir.clone()],
            write,
            run: vec![
                argv(&["launchctl", "bootout", &launchd_service(uid)]),
                argv(&["launchctl", "enable", &launchd_service(uid)]),
                vec![
                    "launchctl".into(),
                    "bootstrap".into(),
                    format!("gui/{uid}"),
                    unit.to_string_lossy().into_owned(),
                ],
            ],
            may_fail: vec![0],
            ..Plan::default()
        },
        Platform::Systemd => Plan {
            write,
            run: vec![
                systemctl(&["daemon-reload"]),
                systemctl(&["enable", SYSTEMD_UNIT]),
                systemctl(&["restart", SYSTEMD_UNIT]),
            ],
            ..Plan::default()
        },
    }
}

/// Stops the service and removes its unit; with `purge` also the state folder, the socket
/// and the log folder. Never the watched folder (the user's CSVs) nor the config (the
/// user's settings, which a later install reuses), nor anything holding either of them.
///
/// The stop commands may fail (nothing installed or loaded, no user manager reachable):
/// the unit is removed all the same, so an uninstall can always be completed or repeated.
pub fn uninstall_plan(platform: Platform, p: &ServicePaths, uid: u32, purge: bool) -> Plan {
    let mut plan = match platform {
        Platform::Launchd => Plan {
            run: vec![argv(&["launchctl", "bootout", &launchd_service(uid)])],
            may_fail: vec![0],
            ..Plan::default()
        },
        // `disable` reloads the manager itself; the reload after it is belt and braces.
        Platform::Systemd => Plan {
            run: vec![
                systemctl(&["disable", "--now", SYSTEMD_UNIT]),
                systemctl(&["daemon-reload"]),
            ],
            may_fail: vec![0, 1],
            ..Plan::default()
        },
    };
    plan.remove.push(unit_path(platform, p));
    plan.keep
        .push((p.watch.clone(), "the watched folder".into()));
    plan.keep.push((p.config.clone(), "the config file".into()));
    if purge {
        let protected = [
            (&p.watch, "the watched folder"),
            (&p.config, "the config file"),
            (&p.home, "the home folder"),
        ];
        let state = normalize(&p.state);
        let mut candidates = vec![p.state.clone(), p.log_dir.clone()];
        if !normalize(&p.socket).starts_with(&state) {
            candidates.push(p.socket.clone());
        }
        for path in candidates {
            let n = normalize(&path);
            let holds = protected
                .iter()
                .find(|(kept, _)| normalize(kept).starts_with(&n));
            match holds {
                Some((_, what)) => plan.keep.push((path, format!("it holds {what}"))),
                None if n.parent().is_none() || !n.is_absolute() => plan
                    .keep
                    .push((path, "not an absolute folder below /".into())),
                None if !plan.remove.contains(&path) => plan.remove.push(path),
                None => {}
            }
        }
    }
    plan
}

impl Plan {
    /// What the plan would do, for people (`--dry-run`): the full content of every file it
    /// writes and every command it runs.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for dir in &self.mkdir {
            let _ = writeln!(out, "create folder {}", dir.display());
        }
        for (path, content) in &self.write {
            let _ = writeln!(out, "write {}:", path.display());
            for line in content.lines() {
                match line {
                    "" => out.push('\n'),
                    line => _ = writeln!(out, "    {line}"),
                }
            }
        }
        for (i, command) in self.run.iter().enumerate() {
            let note = if self.may_fail.contains(&i) {
                "   (a failure is only a warning)"
            } else {
                ""
            };
            let _ = writeln!(out, "run {}{note}", shell_line(command));
        }
        for path in &self.remove {
            let _ = writeln!(out, "remove {}", path.display());
        }
        for (path, why) in &self.keep {
            let _ = writeln!(out, "keep {} ({why})", path.display());
        }
        out
    }

    /// Does the plan: creates the folders, writes the files (temp file, fsync, rename), runs
    /// the commands if `run_commands`, then removes the paths. A command that fails is an
    /// error naming it and quoting its stderr, unless it is in `may_fail` (then a warning).
    pub fn execute(&self, run_commands: bool) -> Result<()> {
        for dir in &self.mkdir {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        for (path, content) in &self.write {
            write_atomically(path, content.as_bytes())?;
        }
        if run_commands {
            for (i, command) in self.run.iter().enumerate() {
                match run(command) {
                    Ok(()) => {}
                    Err(e) if self.may_fail.contains(&i) => tracing::warn!("{e}"),
                    Err(e) => return Err(e),
                }
            }
        }
        for path in &self.remove {
            remove(path)?;
        }
        Ok(())
    }
}

/// The value of a template placeholder.
fn placeholder<'a>(p: &'a ServicePaths, name: &str) -> Option<&'a Path> {
    Some(match name {
        "binary" => &p.binary,
        "config" => &p.config,
        "state" => &p.state,
        "socket" => &p.socket,
        "watch" => &p.watch,
        "log_dir" => &p.log_dir,
        "home" => &p.home,
        _ => return None,
    })
}

/// Replaces each `{{name}}` of `template` with `value(name)`, in one pass (a value that
/// itself holds `{{…}}` stays as it is); unknown names are left untouched.
fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after
            .find("}}")
            .and_then(|end| Some((end, value(&after[..end])?)))
        {
            Some((end, v)) => {
                out.push_str(&v);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text escaped for XML character data. Control characters XML 1.0 cannot carry become
/// U+FFFD; a carriage return is a character reference so parsers keep it.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One word of a systemd command line that stands for `path` exactly: `%` doubled
/// (specifiers), `$` doubled except in the program path (systemd does not expand variables
/// there), and double-quoted with C escapes when it holds spaces, quotes, backslashes, `;`,
/// ASCII control characters or bytes that are not UTF-8.
fn systemd_word(path: &Path, program: bool) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let mut word = String::with_capacity(bytes.len() + 2);
    let mut quote = bytes.is_empty();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '%' => word.push_str("%%"),
                '$' if !program => word.push_str("$$"),
                '\\' | '"' => {
                    quote = true;
                    word.push('\\');
                    word.push(c);
                }
                '\'' | ';' | ' ' => {
                    quote = true;
                    word.push(c);
                }
                c if c.is_ascii_control() => {
                    quote = true;
                    let _ = write!(word, "\\x{:02x}", c as u32);
                }
                c => word.push(c),
            }
        }
        for b in chunk.invalid() {
            quote = true;
            let _ = write!(word, "\\x{b:02x}");
        }
    }
    if quote {
        format!("\"{word}\"")
    } else {
        word
    }
}

/// `path` with `.` dropped and `..` applied, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn systemctl(args: &[&str]) -> Vec<String> {
    let mut v = argv(&["systemctl", "--user"]);
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// The launchd service target of the agent in the user's GUI domain.
fn launchd_service(uid: u32) -> String {
    format!("gui/{uid}/{LAUNCHD_LABEL}")
}

/// A command line as a shell would take it, for messages.
fn shell_line(command: &[String]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-=:@+,%".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect();
    words.join(" ")
}

/// Runs one command; an error names it and quotes its stderr.
fn run(command: &[String]) -> Result<()> {
    let line = shell_line(command);
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::Internal("an empty command in a service plan".into()))?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Internal(format!("could not run `{line}`: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    Err(Error::Internal(if stderr.is_empty() {
        format!("`{line}` failed ({})", out.status)
    } else {
        format!("`{line}` failed ({}): {stderr}", out.status)
    }))
}

/// Writes `content` to `path` through a temp file in the same folder, fsynced and renamed
/// over it, creating the folder if needed.
fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::Internal(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // The rename is durable once the folder is synced; not every file system allows it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes a file, a symlink (not its target) or a folder with its content; a missing path
/// is already removed.
fn remove(path: &Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(root: &str) -> ServicePaths {
        let r = PathBuf::from(root);
        ServicePaths {
            binary: r.join("bin/rollupd"),
            config: r.join("config.toml"),
            state: r.join("state"),
            socket: r.join("state/rollupd.sock"),
            watch: r.join("watch"),
            log_dir: r.join("logs"),
            home: r.clone(),
            xdg_config_home: None,
        }
    }

    #[test]
    fn xml_escapes_specials_and_controls() {
        assert_eq!(
            xml_escape(r#"/a b/&<x>"'q"#),
            "/a b/&amp;&lt;x&gt;&quot;&apos;q"
        );
        assert_eq!(xml_escape("a\rb\u{1}c\td"), "a&#13;b\u{fffd}c\td");
        assert_eq!(
            xml_escape("/Users/zoë/Application Support"),
            "/Users/zoë/Application Support"
        );
    }

    #[test]
    fn systemd_words_are_quoted_and_escaped() {
        let w = |s: &str, program| systemd_word(Path::new(s), program);
        assert_eq!(w("/usr/bin/rollupd", true), "/usr/bin/rollupd");
        assert_eq!(
            w(
                "/Users/a b/Library/Application Support/rollupd/config.toml",
                false
            ),
            "\"/Users/a b/Library/Application Support/rollupd/config.toml\""
        );
        assert_eq!(w("/x/100%/c", false), "/x/100%%/c");
        assert_eq!(w("/x/$HOME/c", false), "/x/$$HOME/c");
        assert_eq!(w("/x/$HOME/c", true), "/x/$HOME/c");
        assert_eq!(w(r#"/x/"q"\b"#, false), r#""/x/\"q\"\\b""#);
        assert_eq!(w("/x/a;b", false), "\"/x/a;b\"");
        assert_eq!(w("/x/it's", false), "\"/x/it's\"");
        assert_eq!(w("/x/a\tb\nc", false), r#""/x/a\x09b\x0ac""#);
        assert_eq!(w("/x/&<ü>", false), "/x/&<ü>");
        use std::os::unix::ffi::OsStrExt;
        let raw = systemd_word(Path::new(std::ffi::OsStr::from_bytes(b"/x/\xff")), false);
        assert_eq!(raw, r#""/x/\xff""#);
    }

    #[test]
    fn fill_is_one_pass_and_leaves_unknown_names() {
        let v = |n: &str| (n == "a").then(|| "{{b}}".to_string());
        assert_eq!(fill("x{{a}}y{{b}}z{{", v), "x{{b}}y{{b}}z{{");
    }

    #[test]
    fn templates_have_only_known_placeholders() {
        let p = paths("/h");
        for platform in [Platform::Launchd, Platform::Systemd] {
            let text = render(platform, &p);
            assert!(!text.contains("{{"), "{platform:?}:\n{text}");
        }
    }

    #[test]
    fn systemd_unit_path_follows_xdg_config_home() {
        let mut p = paths("/h");
        assert_eq!(
            unit_path(Platform::Systemd, &p),
            Path::new("/h/.config/systemd/user/rollupd.service")
        );
        p.xdg_config_home = Some("relative/cfg".into());
        assert_eq!(
            unit_path(Platform::Systemd, &p),
            Path::new("/h/.config/systemd/user/rollupd.service")
        );
        p.xdg_config_home = Some("/x/cfg".into());
        assert_eq!(
            unit_path(Platform::Systemd, &p),
            Path::new("/x/cfg/systemd/user/rollupd.service")
        );
        assert_eq!(
            unit_path(Platform::Launchd, &p),
            Path::new("/h/Library/LaunchAgents/dev.rollupd.plist")
        );
    }

    #[test]
    fn purge_never_removes_what_holds_the_watched_folder_or_config() {
        let mut p = paths("/h");
        p.watch = "/h/state/../state/csv".into();
        p.log_dir = "/h".into();
        let plan = uninstall_plan(Platform::Systemd, &p, 1000, true);
        assert_eq!(
            plan.remove,
            vec![PathBuf::from("/h/.config/systemd/user/rollupd.service")]
        );
        assert!(plan.keep.iter().any(|(k, _)| k == Path::new("/h/state")));
        assert!(plan.keep.iter().any(|(k, _)| k == Path::new("/h")));

        let mut p = paths("/h");
        p.socket = "/run/user/1000/rollupd.sock".into();
        let plan = uninstall_plan(Platform::Launchd, &p, 501, true);
        assert_eq!(
            plan.remove,
            [
                "/h/Library/LaunchAgents/dev.rollupd.plist",
                "/h/state",
                "/h/logs",
                "/run/user/1000/rollupd.sock"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn commands_quote_for_messages() {
        let c = argv(&["launchctl", "bootstrap", "gui/501", "/Users/a b/x's.plist"]);
        assert_eq!(
            shell_line(&c),
            r"launchctl bootstrap gui/501 '/Users/a b/x'\''s.plist'"
        );
    }
}
