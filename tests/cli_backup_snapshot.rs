//! What `offdisk backup/verify/generations/restore` print (stdout, stderr, exit status) for a
//! configured disk and for a bare `--target`, and the ledgers they leave, compared with a
//! snapshot. Timings, rates and the temporary directory are normalised; everything else is
//! byte for byte. Regenerate with `OFFDISK_UPDATE_SNAPSHOTS=1 cargo test --test cli_backup_snapshot`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const UUID: &str = "3f0c4b1e-2a6d-4c8e-9b7a-5d1e2f3a4b5c";
const DAY: i64 = 86400;
const T0: i64 = 1_700_000_000;

struct Session {
    dir: PathBuf,
    config: PathBuf,
    out: String,
}

impl Session {
    fn run(&mut self, args: &[&str]) {
        let out = Command::new(env!("CARGO_BIN_EXE_offdisk"))
            .args(args)
            .env_remove("OFFDISK_CONFIG")
            .env_remove("OFFDISK_LEDGER_DIR")
            .env("OFFDISK_CONFIG", &self.config)
            .output()
            .expect("run offdisk");
        let _ = writeln!(self.out, "$ offdisk {}", args.join(" "));
        let _ = writeln!(self.out, "[exit {}]", out.status.code().unwrap_or(-1));
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if !bytes.is_empty() {
                let _ = writeln!(self.out, "--- {name}\n{}", String::from_utf8_lossy(bytes).trim_end());
            }
        }
    }

    fn show_file(&mut self, label: &str, path: &Path) {
        let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
        let _ = writeln!(self.out, "=== {label}\n{}", text.trim_end());
    }

    fn normalised(&self) -> String {
        let dir = self.dir.to_str().unwrap();
        let mut s = self.out.replace(dir, "<DIR>").replace(dir.trim_start_matches('/'), "<DIR>");
        for (re, with) in [
            (r"\d+\.\d+ s\b", "<T> s"),
            (r"[0-9.]+ (B|KiB|MiB|GiB)/s", "<RATE>/s"),
            (r#""(seconds|prune_seconds)": [0-9.e-]+"#, r#""$1": <T>"#),
            (r#""host": "[^"]*""#, r#""host": "<HOST>""#),
        ] {
            s = regex::Regex::new(re).unwrap().replace_all(&s, with).into_owned();
        }
        s
    }
}

fn tree(src: &Path) {
    fs::create_dir_all(src.join("docs/sub")).unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("docs/a.txt"), b"alpha\n").unwrap();
    fs::write(src.join("docs/sub/b.bin"), vec![7u8; 5000]).unwrap();
    fs::write(src.join("docs/skip.tmp"), b"default exclude").unwrap();
    fs::write(src.join("docs/x.log"), b"excluded by the exclude file").unwrap();
    fs::write(src.join("docs/private"), b"disk exclude").unwrap();
    fs::write(src.join("cache/CACHEDIR.TAG"), b"Signature: 8a477f597d28d172789f06886806bc55\n").unwrap();
    fs::write(src.join("cache/big"), vec![1u8; 10000]).unwrap();
}

#[test]
fn backup_cli_output_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let src = dir.join("src");
    let target = dir.join("target");
    tree(&src);
    fs::create_dir_all(&target).unwrap();
    fs::write(dir.join("excludes.txt"), "# comment\n*.log\n").unwrap();
    let config = dir.join("config.toml");
    fs::write(
        &config,
        format!(
            "ledger_dir = \"{d}/ledger\"\n[defaults]\nexcludes = [\"*.tmp\"]\n\n[[disk]]\nluks_uuid = \"{UUID}\"\nlabel = \"SNAP\"\n\
             sources = [\"{d}/src\"]\nexcludes = [\"**/private\"]\nexclude_file = \"{d}/excludes.txt\"\nmount_point = \"{d}/not-mounted\"\n\
             [disk.retention]\nkeep_last = 2\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut s = Session { dir: dir.clone(), config: config.clone(), out: String::new() };
    let (t, c) = (target.to_str().unwrap().to_string(), config.to_str().unwrap().to_string());
    let at = |n: i64| (T0 + n * DAY).to_string();

    // A configured disk: its sources, excludes, exclude file, caches rule and retention.
    s.run(&["backup", "--disk", "SNAP", "--target", &t, "--at", &at(0)]);
    fs::write(src.join("docs/a.txt"), b"alpha, changed\n").unwrap();
    s.run(&["backup", "--disk", "SNAP", "--target", &t, "--at", &at(1), "--json"]);
    // A leftover of an interrupted run is cleaned up (and said so with -v); retention prunes one.
    fs::create_dir_all(target.join("generations/.partial-2001-01-01T000000Z/tree")).unwrap();
    s.run(&["-v", "backup", "--disk", SNAP_UUID_UPPER, "--target", &t, "--at", &at(2)]);
    s.run(&["backup", "--disk", "SNAP", "--target", &t, "--at", &at(3), "--include-caches", "--cross-filesystems", "--keep-last", "3"]);
    s.show_file("host ledger", &dir.join("ledger").join(format!("{UUID}.json")));
    s.show_file("disk ledger", &target.join("offdisk-ledger.json"));

    s.run(&["generations", "--target", &t]);
    s.run(&["generations", "--target", &t, "--json"]);
    s.run(&["verify", "--target", &t]);
    s.run(&["verify", "--target", &t, "--generation", "latest", "--quick", "--json"]);

    // Bare --target with explicit sources and CLI policy; the disk ledger is kept, no host one.
    let bare = dir.join("bare");
    fs::create_dir_all(&bare).unwrap();
    let b = bare.to_str().unwrap().to_string();
    let docs = src.join("docs");
    let d = docs.to_str().unwrap();
    s.run(&["backup", "--target", &b, "--at", &at(0), "--exclude", "*.bin", "--exclude-from", dir.join("excludes.txt").to_str().unwrap(), d]);
    s.run(&["backup", "--target", &b, "--at", &at(1), "--keep-last", "1", d]);
    s.run(&["backup", "--target", &b, "--at", &at(1), "--keep-last", "1", "--json", d]);
    s.show_file("bare disk ledger", &bare.join("offdisk-ledger.json"));
    s.run(&["generations", "--target", &b]);

    // Damage and restore.
    let gens: Vec<PathBuf> = {
        let mut v: Vec<_> = fs::read_dir(target.join("generations")).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    let newest = gens.last().unwrap();
    let rel = src.strip_prefix("/").unwrap();
    fs::write(newest.join("tree").join(rel).join("docs/sub/b.bin"), vec![8u8; 5000]).unwrap();
    fs::remove_file(newest.join("tree").join(rel).join("docs/a.txt")).unwrap();
    s.run(&["verify", "--target", &t, "--generation", "latest"]);
    s.run(&["verify", "--target", &t, "--json"]);
    let dest = dir.join("restored");
    s.run(&["restore", "--target", &t, "--generation", "latest", src.join("docs/sub").to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    s.run(&["restore", "--target", &t, src.join("docs/sub").to_str().unwrap(), "--to", dest.to_str().unwrap(), "--json"]);
    s.run(&["generations", "--target", &t, "--delete", gens[0].file_name().unwrap().to_str().unwrap()]);

    // Errors: what went wrong and what to do.
    s.run(&["backup", "--disk", "NOPE", "--target", &t]);
    s.run(&["backup", "--config", &c, "--target", &b]);
    s.run(&["backup", "--config", &c]);
    s.run(&["backup", "--disk", "SNAP"]);
    s.run(&["verify", "--disk", "SNAP"]);
    s.run(&["verify", "--target", &t, "--generation", "1999"]);
    s.run(&["backup", "--target", &b, dir.join("no-such-source").to_str().unwrap()]);
    s.run(&["generations", "--target", &t, "--delete", newest.file_name().unwrap().to_str().unwrap()]);

    let got = s.normalised();
    let snap = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/cli_backup.txt");
    if std::env::var_os("OFFDISK_UPDATE_SNAPSHOTS").is_some() {
        fs::create_dir_all(snap.parent().unwrap()).unwrap();
        fs::write(&snap, &got).unwrap();
        return;
    }
    let want = fs::read_to_string(&snap).expect("snapshot missing: run with OFFDISK_UPDATE_SNAPSHOTS=1");
    if got != want {
        let diff: Vec<String> = got
            .lines()
            .zip(want.lines())
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .take(10)
            .map(|(i, (g, w))| format!("line {}:\n  got:  {g}\n  want: {w}", i + 1))
            .collect();
        panic!("CLI output differs from {}:\n{}\n(lines: got {}, want {})", snap.display(), diff.join("\n"), got.lines().count(), want.lines().count());
    }
}

/// The disk named by its UUID in upper case (UUIDs compare case-insensitively).
const SNAP_UUID_UPPER: &str = "3F0C4B1E-2A6D-4C8E-9B7A-5D1E2F3A4B5C";

#[path = "anywhere_support/mod.rs"]
mod anywhere_support;

#[test]
fn restore_words_are_the_same_from_a_mounted_disk_and_from_an_image() {
    // The same generation restored from its backup root (as a mounted disk shows it) and from
    // an image of the disk read directly (--from): for each situation both routes must print
    // the same lines and exit with the same status.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (src, root, work) = (dir.join("src"), dir.join("root"), dir.join("work"));
    fs::create_dir_all(src.join("docs/sub")).unwrap();
    fs::write(src.join("docs/a.txt"), b"alpha\n").unwrap();
    fs::write(src.join("docs/sub/b.bin"), vec![7u8; 5000]).unwrap();
    std::os::unix::fs::symlink("sub", src.join("docs/link")).unwrap();
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&work).unwrap();
    let s = src.to_str().unwrap().to_string();
    let backed = Command::new(env!("CARGO_BIN_EXE_offdisk")).args(["backup", "--no-progress", "--target", root.to_str().unwrap(), &s]).output().unwrap();
    assert!(backed.status.success(), "{}", String::from_utf8_lossy(&backed.stderr));
    let spec = anywhere_support::Spec { luks: "luks2", cipher: "aes-xts-plain64", key_bits: 512, sector: 4096, gpt: false, mkfs: &[] };
    let img = anywhere_support::build(&spec, &root, &work);
    let routes: [(&str, Vec<String>); 2] = [
        ("mounted", vec!["--target".into(), root.to_str().unwrap().into()]),
        ("--from", vec!["--from".into(), img.path.to_str().unwrap().into(), "--key-file".into(), img.key_file.to_str().unwrap().into()]),
    ];
    let situations: [(&str, Vec<String>); 6] = [
        ("a whole tree", vec![s.clone()]),
        ("one file that exists in DEST", vec![format!("{s}/docs/a.txt")]),
        ("everything exists in DEST", vec![s.clone()]),
        ("a path not in the generation", vec![format!("{s}/nope")]),
        ("a path through a stored symlink", vec![format!("{s}/docs/link/b.bin")]),
        ("a path through a stored file", vec![format!("{s}/docs/a.txt/x")]),
    ];
    let config = dir.join("config.toml");
    fs::write(&config, format!("ledger_dir = \"{}/ledger\"\n", dir.display())).unwrap();
    let mut said: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for (i, (route, args)) in routes.iter().enumerate() {
        let dest = dir.join(format!("dest-{i}"));
        for (what, paths) in &situations {
            let out = Command::new(env!("CARGO_BIN_EXE_offdisk"))
                .arg("restore")
                .args(args)
                .args(paths)
                .arg("--to")
                .arg(&dest)
                .env("OFFDISK_CONFIG", &config)
                .output()
                .unwrap();
            let text = format!(
                "{what}: [exit {}]\n{}{}",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            said[i].push(format!("({route}) {}", text.replace(dest.to_str().unwrap(), "DEST")));
        }
    }
    for (m, f) in said[0].iter().zip(&said[1]) {
        assert_eq!(m.replacen("(mounted) ", "", 1), f.replacen("(--from) ", "", 1), "the two routes word the same situation differently");
    }
    let all = said[0].join("\n");
    for want in [
        "[exit 0]\nrestore from ",
        ": 2 files, ",
        &format!("offdisk: warning: DEST{s}/docs/a.txt: exists, not overwritten\n"),
        ": 0 files, 0 B into DEST; 1 warning\n",
        &format!("offdisk: {s}/nope is not in generation "),
        &format!("offdisk: {s}/docs/link/b.bin: the path runs through a symlink stored in the generation ({}/docs/link); it is not followed\n  hint: restore the symlink itself, or the path it points to", s.trim_start_matches('/')),
        &format!("offdisk: {s}/docs/a.txt/x is not in generation "),
    ] {
        assert!(all.contains(want), "{want:?} not in:\n{all}");
    }
}
