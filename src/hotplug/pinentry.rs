//! A small Assuan client for pinentry programs (`pinentry-gnome3`, `pinentry-gtk2`,
//! `pinentry-qt`, `pinentry-curses`, or a scripted one in tests): sets the texts, sends
//! GETPIN, and reads the `D` line straight into locked memory.

use super::HotplugError;
use crate::secret::{Passphrase, SecretBytes};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Assuan's "operation cancelled" error code (GPG_ERR_CANCELED with the pinentry source).
const ERR_CANCELLED: &str = "83886179";
const MAX_LINE: usize = 8192;

#[derive(Debug, Clone, Default)]
pub struct PinRequest {
    pub title: String,
    pub description: String,
    pub prompt: String,
    /// Shown above the entry when asking again ("Wrong passphrase, 2 tries left").
    pub error: Option<String>,
}

/// The first pinentry found: `$OFFDISK_PINENTRY` (tests), then the usual programs.
pub fn find_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OFFDISK_PINENTRY") {
        return Some(PathBuf::from(p));
    }
    let graphical = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let names: &[&str] = if graphical {
        &["pinentry-gnome3", "pinentry-qt", "pinentry-gtk-2", "pinentry-gtk2", "pinentry-x2go", "pinentry"]
    } else {
        &["pinentry-curses", "pinentry-tty", "pinentry"]
    };
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        for n in names {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

/// Assuan percent-escaping of `%`, CR and LF (and other controls) in command arguments.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c.is_control() {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn read_line(r: &mut impl Read) -> Result<SecretBytes, HotplugError> {
    let mut buf = SecretBytes::zeroed(MAX_LINE);
    let mut n = 0;
    loop {
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(0) => return Err(HotplugError::Pinentry("pinentry closed the connection".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HotplugError::Pinentry(e.to_string())),
        }
        if b[0] == b'\n' {
            return Ok(SecretBytes::from_slice(&buf.expose()[..n]));
        }
        if n == MAX_LINE {
            return Err(HotplugError::Pinentry("line too long".into()));
        }
        buf.expose_mut()[n] = b[0];
        zeroize::Zeroize::zeroize(&mut b);
        n += 1;
    }
}

/// Reads lines until OK (Ok(())) or ERR (Err(text)); `D` lines are appended to `data`.
fn until_ok(r: &mut impl Read, mut data: Option<&mut Vec<SecretBytes>>) -> Result<Result<(), String>, HotplugError> {
    loop {
        let line = read_line(r)?;
        let l = line.expose();
        if l.starts_with(b"OK") {
            return Ok(Ok(()));
        }
        if l.starts_with(b"ERR") {
            return Ok(Err(String::from_utf8_lossy(l).into_owned()));
        }
        if let (Some(rest), Some(d)) = (l.strip_prefix(b"D "), data.as_deref_mut()) {
            d.push(unescape(rest)?);
        }
        // S (status), # (comments), INQUIRE we do not answer: skipped.
    }
}

fn unescape(src: &[u8]) -> Result<SecretBytes, HotplugError> {
    let mut out = SecretBytes::zeroed(src.len());
    let (mut i, mut n) = (0, 0);
    while i < src.len() {
        if src[i] == b'%' {
            let h = src.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.expose_mut()[n] = h.ok_or_else(|| HotplugError::Pinentry("bad escape in D line".into()))?;
            i += 3;
        } else {
            out.expose_mut()[n] = src[i];
            i += 1;
        }
        n += 1;
    }
    Ok(SecretBytes::from_slice(&out.expose()[..n]))
}

/// Runs `program` and asks for a passphrase. `Ok(None)`: the user cancelled.
pub fn get_pin(program: &Path, req: &PinRequest) -> Result<Option<Passphrase>, HotplugError> {
    let mut child = Command::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| HotplugError::Pinentry(format!("starting {}: {e}", program.display())))?;
    let result = converse(&mut child, req);
    // Closing stdin ends pinentry; wait so no zombie stays behind.
    drop(child.stdin.take());
    let _ = child.wait();
    result
}

fn converse(child: &mut std::process::Child, req: &PinRequest) -> Result<Option<Passphrase>, HotplugError> {
    let mut out = child.stdout.take().ok_or_else(|| HotplugError::Pinentry("no stdout".into()))?;
    let stdin = child.stdin.as_mut().ok_or_else(|| HotplugError::Pinentry("no stdin".into()))?;
    let greeting = read_line(&mut out)?;
    if !greeting.expose().starts_with(b"OK") {
        return Err(HotplugError::Pinentry("unexpected greeting".into()));
    }
    let mut cmds = vec![
        format!("SETTITLE {}", escape(&req.title)),
        format!("SETDESC {}", escape(&req.description)),
        format!("SETPROMPT {}", escape(&req.prompt)),
    ];
    if let Some(e) = &req.error {
        cmds.push(format!("SETERROR {}", escape(e)));
    }
    if let Ok(tty) = std::env::var("GPG_TTY") {
        cmds.push(format!("OPTION ttyname={}", escape(&tty)));
    }
    for c in cmds {
        writeln!(stdin, "{c}").map_err(|e| HotplugError::Pinentry(e.to_string()))?;
        // Options a pinentry does not know give ERR; that is fine.
        until_ok(&mut out, None)?.ok();
    }
    writeln!(stdin, "GETPIN").map_err(|e| HotplugError::Pinentry(e.to_string()))?;
    let mut data = Vec::new();
    let r = until_ok(&mut out, Some(&mut data))?;
    let _ = writeln!(stdin, "BYE");
    match r {
        Ok(()) => {
            let total: usize = data.iter().map(|d| d.len()).sum();
            let mut p = SecretBytes::zeroed(total);
            let mut n = 0;
            for d in &data {
                p.expose_mut()[n..n + d.len()].copy_from_slice(d.expose());
                n += d.len();
            }
            if p.is_empty() {
                return Ok(None);
            }
            Ok(Some(Passphrase::new(p)))
        }
        Err(e) if e.contains(ERR_CANCELLED) || e.to_ascii_lowercase().contains("cancel") => Ok(None),
        Err(e) => Err(HotplugError::Pinentry(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A scripted pinentry: answers GETPIN with the content of $1 (or cancels if absent),
    /// and logs the commands it got into $2.
    fn script(dir: &Path, answer: Option<&str>) -> PathBuf {
        let ans = dir.join("answer");
        if let Some(a) = answer {
            std::fs::write(&ans, a).unwrap();
        }
        let p = dir.join("pinentry-test");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho 'OK Pleased to meet you'\nwhile read -r cmd rest; do\n  echo \"$cmd $rest\" >> '{log}'\n  case \"$cmd\" in\n    GETPIN) if [ -f '{ans}' ]; then echo \"D $(cat '{ans}')\"; echo OK; else echo 'ERR 83886179 Operation cancelled <Pinentry>'; fi;;\n    BYE) echo OK; exit 0;;\n    *) echo OK;;\n  esac\ndone\n",
                log = dir.join("log").display(),
                ans = ans.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn req() -> PinRequest {
        PinRequest {
            title: "offdisk".into(),
            description: "Unlock \"A\"\n50% done".into(),
            prompt: "Passphrase:".into(),
            error: Some("Wrong passphrase".into()),
        }
    }

    #[test]
    fn reads_escaped_pin() {
        let dir = tempfile::tempdir().unwrap();
        let prog = script(dir.path(), Some("s3cret%25x%0Ay"));
        let pin = get_pin(&prog, &req()).unwrap().unwrap();
        assert_eq!(pin.expose(), b"s3cret%x\ny");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(log.contains("SETDESC Unlock \"A\"%0A50%25 done"), "{log}");
        assert!(log.contains("SETERROR Wrong passphrase"));
        assert!(log.contains("GETPIN"));
    }

    #[test]
    fn cancel_is_none_and_missing_program_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let prog = script(dir.path(), None);
        assert!(get_pin(&prog, &req()).unwrap().is_none());
        assert!(get_pin(Path::new("/nonexistent/pinentry"), &req()).is_err());
    }
}
