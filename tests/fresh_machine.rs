//! A fresh Debian machine following README.md (issue 14): nothing in the tests or scripts
//! may name a kernel, package version or versioned path (the tests broke once because a test
//! pinned one kernel image and Debian moved to the next ABI); README's two commands run
//! as root without sudo; the Rust check says what to run; apt waits for another apt's lock;
//! a redirected demo log is readable text.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A version-pinned reference found in a file.
#[derive(Debug)]
struct Pin {
    at: String,
    token: String,
    installed: bool,
}

/// Prefixes after which a digit starts a version that a package update changes.
const VERSIONED: &[&str] = &[
    "vmlinuz-",
    "initrd.img-",
    "System.map-",
    "/lib/modules/",
    "linux-image-",
    "linux-headers-",
    "python3.",
    "/usr/lib/llvm-",
    "/usr/lib/gcc/x86_64-linux-gnu/",
    "/usr/lib/jvm/java-",
    "virtme-ng==",
];

fn installed(token: &str) -> bool {
    let kernel = ["vmlinuz-", "initrd.img-", "System.map-", "linux-image-", "linux-headers-", "/lib/modules/"]
        .iter()
        .find_map(|p| token.find(p).map(|i| &token[i + p.len()..]));
    if let Some(version) = kernel {
        let version = version.trim_end_matches('/');
        return Path::new("/lib/modules").join(version).exists() || Path::new("/boot").join(format!("vmlinuz-{version}")).exists();
    }
    if token.starts_with('/') {
        return Path::new(token).exists();
    }
    // A command such as python3.11: on the PATH?
    Command::new("sh").args(["-c", &format!("command -v '{token}'")]).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Every versioned reference in one text.
fn pins_in(name: &str, text: &str) -> Vec<Pin> {
    let mut pins = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.contains("pin-ok") {
            continue;
        }
        for prefix in VERSIONED {
            let mut from = 0;
            while let Some(i) = line[from..].find(prefix) {
                let start = from + i;
                let after = start + prefix.len();
                from = after;
                if !line[after..].starts_with(|c: char| c.is_ascii_digit()) {
                    continue;
                }
                // The whole token: back to a separator, forward to one.
                let sep = |c: char| c.is_whitespace() || "\"'`()<>,;=$[]{}|".contains(c);
                let begin = line[..start].rfind(sep).map(|j| j + 1).unwrap_or(0);
                let end = line[after..].find(sep).map(|j| after + j).unwrap_or(line.len());
                let token = line[begin..end].trim_end_matches(['.', ':']).to_string();
                let token = if *prefix == "virtme-ng==" { format!("{token}{}", &line[end..].split_whitespace().next().unwrap_or("")) } else { token };
                pins.push(Pin { at: format!("{name}:{}", n + 1), installed: installed(&token), token });
            }
        }
        // apt-get install pkg=version
        if line.contains("apt-get") && line.contains("install") {
            for word in line.split_whitespace() {
                if let Some((pkg, ver)) = word.split_once('=') {
                    if !pkg.is_empty() && pkg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)) && ver.starts_with(|c: char| c.is_ascii_digit()) {
                        pins.push(Pin { at: format!("{name}:{}", n + 1), token: word.to_string(), installed: false });
                    }
                }
            }
        }
    }
    pins
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == ".git" || name == "corpus" || name == "artifacts" {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The tests, scripts, CI entry and packaging files: everything that runs on a machine.
fn scanned_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in ["tests", "scripts", ".ci", "contrib", "benches", "examples", "fuzz"] {
        files_under(&root.join(d), &mut files);
    }
    files.push(root.join("README.md"));
    files.retain(|f| f.file_name() != Some("fresh_machine.rs".as_ref()));
    files
}

fn pins_in_tree(root: &Path) -> Vec<Pin> {
    let mut pins = Vec::new();
    for f in scanned_files(root) {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        if bytes.contains(&0) {
            continue; // binary fixtures
        }
        let rel = f.strip_prefix(root).unwrap_or(&f).display().to_string();
        pins.extend(pins_in(&rel, &String::from_utf8_lossy(&bytes)));
    }
    pins
}

#[test]
fn nothing_names_a_kernel_package_version_or_versioned_path() {
    let pins = pins_in_tree(&repo());
    let report: Vec<String> = pins
        .iter()
        .map(|p| format!("{}: {} ({})", p.at, p.token, if p.installed { "installed today, gone after an update" } else { "NOT INSTALLED here" }))
        .collect();
    assert!(
        report.is_empty(),
        "pick the newest installed one instead (as tests/vm/run.sh picks the kernel), or mark a line pin-ok:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_guard_catches_the_pin_that_broke_ci() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    let kernel = format!("/boot/vmlinuz-{}-amd64", "6.1.0-56");
    std::fs::write(dir.path().join("tests/vm.rs"), format!("Command::new(\"vng\").arg(\"--run\").arg(\"{kernel}\");\n")).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/x.sh"), "apt-get install -y qemu-system-x86=1:7.2+dfsg-7\n/usr/lib/python3.99/venv\n").unwrap();
    let pins = pins_in_tree(dir.path());
    let tokens: Vec<&str> = pins.iter().map(|p| p.token.as_str()).collect();
    assert!(tokens.contains(&kernel.as_str()), "{pins:?}");
    assert!(tokens.contains(&"qemu-system-x86=1:7.2+dfsg-7"), "{pins:?}");
    assert!(tokens.contains(&"/usr/lib/python3.99/venv"), "{pins:?}");
    assert!(pins.iter().all(|p| !p.installed), "{pins:?}");
    // The newest-kernel pattern itself is not a pin.
    assert!(pins_in("ok", "kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)").is_empty());
}

/// The code blocks of README's "Two commands on a fresh Debian machine" section.
fn readme_commands() -> (String, Vec<String>) {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("\n## ").find(|s| s.starts_with("Two commands")).expect("README has the two-commands section").to_string();
    let commands = section.split("```sh\n").skip(1).filter_map(|b| b.split("```").next()).flat_map(|b| b.lines().map(str::to_string)).filter(|l| !l.trim().is_empty()).collect();
    (section, commands)
}

#[test]
fn readmes_two_commands_run_as_root_without_sudo() {
    let (section, commands) = readme_commands();
    assert_eq!(commands, ["bash scripts/install.sh --demo", "bash tests/run-all.sh"], "README's two commands");
    assert!(section.contains("as root") && section.contains("sudo"), "README says root runs them as they are, others prefix sudo:\n{section}");
    for c in &commands {
        let script = c.split_whitespace().nth(1).unwrap();
        assert!(repo().join(script).exists(), "{c}: no {script}");
    }
}

/// A PATH holding only the given tools (symlinks to the real ones) plus `extra`.
fn only_tools(dir: &Path, tools: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for t in tools {
        for d in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
            let real = Path::new(d).join(t);
            if real.exists() {
                let _ = std::os::unix::fs::symlink(&real, bin.join(t));
                break;
            }
        }
    }
    bin
}

fn fake(bin: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = bin.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const SHELL_TOOLS: &[&str] = &["bash", "sh", "sed", "awk", "sort", "head", "cat", "dirname", "grep", "mktemp", "rm", "tee", "sleep", "tr", "cut"];

fn check_rust(path: &Path, home: &Path) -> (bool, String) {
    let out = Command::new("/bin/bash")
        .arg(repo().join("scripts/check-rust.sh"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn rust_is_checked_against_cargo_tomls_rust_version() {
    let dir = tempfile::tempdir().unwrap();
    let bin = only_tools(dir.path(), SHELL_TOOLS);
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let want = manifest.lines().find_map(|l| l.strip_prefix("rust-version = \"")).unwrap().trim_end_matches('"').to_string();

    let (ok, out) = check_rust(&bin, dir.path());
    assert!(!ok && out.contains(&format!("Rust >= {want}")) && out.contains("not installed") && out.contains("rustup"), "no cargo:\n{out}");
    assert!(out.contains(". \"$HOME/.cargo/env\""), "says how to get it on the PATH:\n{out}");

    // Debian 12's own cargo.
    fake(&bin, "cargo", "echo 'cargo 0.66.0'");
    let (ok, out) = check_rust(&bin, dir.path());
    assert!(!ok && out.contains("0.66.0") && out.contains("rustup"), "too old:\n{out}");
    fake(&bin, "cargo", "echo 'cargo 1.63.0'");
    fake(&bin, "rustup", "exit 0");
    let (ok, out) = check_rust(&bin, dir.path());
    assert!(!ok && out.contains("rustup update stable"), "too old, rustup present:\n{out}");

    fake(&bin, "cargo", &format!("echo 'cargo {want}.0 (abc 2025-01-01)'"));
    let (ok, out) = check_rust(&bin, dir.path());
    assert!(ok, "exactly the minimum:\n{out}");
    fake(&bin, "cargo", "echo 'cargo 1.200.1'");
    let (ok, out) = check_rust(&bin, dir.path());
    assert!(ok, "newer (compared as versions, not text):\n{out}");
}

#[test]
fn apt_waits_for_another_apts_locks() {
    let dir = tempfile::tempdir().unwrap();
    let bin = only_tools(dir.path(), SHELL_TOOLS);
    let log = dir.path().join("apt.log");
    let state = dir.path().join("update-tries");
    // dpkg-query: nothing is installed. apt-get: the lists' lock is held for the first two
    // updates, as when unattended-upgrades runs; the install must be told to wait for dpkg's.
    // dpkg-query: nothing is installed until apt-get install ran (apt-missing checks after).
    let installed = dir.path().join("installed");
    fake(&bin, "dpkg-query", &format!("[ -e {} ] && echo 'install ok installed' || exit 1", installed.display()));
    fake(
        &bin,
        "apt-get",
        &format!(
            "echo \"$*\" >> {log}\ncase \" $* \" in *' install '*) : > {installed} ;; esac\ncase \" $* \" in *' update '*) n=$(cat {state} 2>/dev/null || echo 0); echo $((n+1)) > {state}\n  if [ \"$n\" -lt 2 ]; then echo 'E: Could not get lock /var/lib/apt/lists/lock. It is held by process 42 (apt-get)' >&2; exit 100; fi ;; esac\nexit 0",
            log = log.display(),
            state = state.display(),
            installed = installed.display()
        ),
    );
    let out = Command::new("/bin/bash")
        .arg(repo().join("scripts/apt-missing.sh"))
        .args(["hello", "cowsay"])
        .env_clear()
        .env("PATH", &bin)
        .env("OFFDISK_APT_RETRY_SECONDS", "0")
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{}\n{calls}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.contains(" update")).count(), 3, "{calls}");
    let install = lines.iter().find(|l| l.contains(" install ")).expect("apt-get install ran");
    assert!(install.contains("DPkg::Lock::Timeout=") && install.ends_with("hello cowsay"), "{install}");

    // A failure that is not the lock is not retried.
    std::fs::write(&log, "").unwrap();
    std::fs::remove_file(&installed).unwrap();
    fake(&bin, "apt-get", &format!("echo \"$*\" >> {}\necho 'E: network down' >&2; exit 100", log.display()));
    let out = Command::new("/bin/bash").arg(repo().join("scripts/apt-missing.sh")).arg("hello").env_clear().env("PATH", &bin).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}

#[test]
fn a_redirected_demo_log_is_readable_text() {
    // A stand-in for vng that does what the VM console does: reopen standard output as a
    // file (truncating it) and write from its start.
    let dir = tempfile::tempdir().unwrap();
    let vng = dir.path().join("vng");
    std::fs::write(&vng, "#!/bin/bash\nexec >/proc/self/fd/1\necho 'guest: booting'\necho 'demo finished'\n").unwrap();
    std::fs::set_permissions(&vng, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "echo 'before the VM: installing offdisk'; bash {demo}; rc=$?; echo \"after the VM: rc=$rc\"",
        demo = repo().join("tests/vm/demo.sh").display()
    );
    let status = Command::new("/bin/bash")
        .args(["-c", &script])
        .env("OFFDISK", env!("CARGO_BIN_EXE_offdisk"))
        .env("OFFDISK_VNG", &vng)
        .env("OFFDISK_VM_KERNEL", "/dev/null")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!bytes.contains(&0), "NUL bytes in the log:\n{text:?}");
    for want in ["before the VM", "guest: booting", "demo finished", "after the VM: rc=0"] {
        assert!(text.contains(want), "{want:?} missing from the log:\n{text}");
    }
}

#[test]
fn the_vm_scripts_and_tests_find_vng_in_the_venv() {
    let root = repo();
    let lib = std::fs::read_to_string(root.join("scripts/vng.sh")).unwrap();
    let venv = lib.lines().find_map(|l| l.strip_prefix("OFFDISK_VENV=${OFFDISK_VENV:-")).unwrap().trim_end_matches('}').to_string();
    let maker = std::fs::read_to_string(root.join("scripts/virtme-venv.sh")).unwrap();
    assert!(maker.contains("/usr/bin/python3 -m venv") && maker.contains("python3-venv"), "the venv is Debian python's");
    for f in ["tests/vm/run.sh", "tests/vm/demo.sh"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        assert!(text.contains("scripts/vng.sh") && text.contains("offdisk_vng"), "{f} does not use scripts/vng.sh");
    }
    for f in ["tests/deps.sh", "scripts/install.sh"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        assert!(text.contains("virtme-venv.sh") && !text.contains("pip install"), "{f} must install virtme-ng with scripts/virtme-venv.sh");
    }
    let vm_data = std::fs::read_to_string(root.join("tests/luks_vm_data.rs")).unwrap();
    assert!(vm_data.contains(&venv), "tests/luks_vm_data.rs looks for vng in {venv}");
    // The shell lookup: the venv's vng comes before one on the PATH.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("venv/bin")).unwrap();
    std::fs::create_dir_all(dir.path().join("path")).unwrap();
    fake(&dir.path().join("venv/bin"), "vng", "exit 0");
    fake(&dir.path().join("path"), "vng", "exit 0");
    fake(&dir.path().join("venv/bin"), "virtme-run", "exit 0");
    let out = Command::new("/bin/bash")
        .args(["-c", &format!(". {}; offdisk_vng; command -v virtme-run", root.join("scripts/vng.sh").display())])
        .env("OFFDISK_VENV", dir.path().join("venv"))
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().join("path").display()))
        .env_remove("OFFDISK_VNG")
        .output()
        .unwrap();
    // vng starts virtme-run by name: the venv's comes first on the PATH too.
    let venv_bin = dir.path().join("venv/bin");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(), [venv_bin.join("vng").display().to_string(), venv_bin.join("virtme-run").display().to_string()]);
}
