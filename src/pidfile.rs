//! [`PidFile`]: the file naming the process that serves (`Server::pid_file`), as init scripts,
//! monitoring and `kill $(cat …)` expect it.
//!
//! Claimed when configured (refused if it names another live process), written atomically once the
//! server is ready (a temporary file renamed over it, so a reader never sees it half-written), and
//! removed when the server stops — only if it still names this process and no upgrade handed over
//! to a successor, so a successor that took it over during an upgrade keeps its own (even one that
//! has not rewritten it yet).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::sys;

/// A claimed PID file.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Claims `path`, refusing it while it names another live process (other than `predecessor`, the
    /// process this one is taking over from in an upgrade). A file naming a dead process, or not
    /// holding a number, is stale and will be replaced.
    ///
    /// # Errors
    /// `AlreadyExists` naming the live process; reading the file failing other than `NotFound`.
    pub(crate) fn claim(path: &Path, predecessor: Option<u32>) -> io::Result<PidFile> {
        match fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(pid) = text.trim().parse::<u32>() {
                    let ours = pid == std::process::id() || Some(pid) == predecessor;
                    if !ours && sys::process_alive(pid) {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "PID file {} names process {pid}, which is running",
                                path.display()
                            ),
                        ));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(sys::context(e, format!("reading {}", path.display()))),
        }
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }

    /// Writes this process's pid: to a temporary file beside it, renamed over it.
    ///
    /// # Errors
    /// Creating, writing or renaming the file failing.
    pub(crate) fn write(&self) -> io::Result<()> {
        let pid = std::process::id();
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{pid}.tmp"));
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            writeln!(file, "{pid}")?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(|e| sys::context(e, format!("writing PID file {}", self.path.display())))
    }

    /// Removes the file if it still names this process and no successor has taken it over.
    pub(crate) fn remove(&self) {
        if crate::upgrade::handed_over() {
            return;
        }
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours && let Err(e) = fs::remove_file(&self.path) {
            log::warn!("removing PID file {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_keeps_its_file_and_a_dead_one_loses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.pid");
        // The parent of this test process is alive, and not us.
        let parent = std::os::unix::process::parent_id();
        fs::write(&path, format!("{parent}\n")).unwrap();
        let err = PidFile::claim(&path, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains(&parent.to_string()), "{err}");
        // Unless it is the predecessor of an upgrade.
        PidFile::claim(&path, Some(parent)).unwrap();
        // A dead process's file, or garbage, is stale.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fs::write(&path, format!("{dead}\n")).unwrap();
        let file = PidFile::claim(&path, None).unwrap();
        file.write().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        file.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_file_taken_over_is_left_to_its_new_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.pid");
        let file = PidFile::claim(&path, None).unwrap();
        file.write().unwrap();
        fs::write(&path, "1\n").unwrap(); // a successor wrote its own pid
        file.remove();
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
    }
}
