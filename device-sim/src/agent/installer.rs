//! Installing an image (step 7), as a trait: the simulator installs in
//! memory with configurable failures; a real device writes files and runs a
//! health check command. Calls may block: the I/O loop runs them off the
//! runtime threads.
//!
//! Semantics the machine relies on:
//! - `install` for an app or config writes the image, starts it and runs its
//!   health check; on failure it restores the previous one and says why.
//! - `install` for firmware writes the image where the next boot takes it
//!   from (the inactive slot); `boot` then boots into it, runs the health
//!   check, and falls back to the previous image if either fails.
//! - `installed` reads the running image of a component (E3: its hash picks
//!   a delta, its bytes rebuild the target); `None` when the installer
//!   cannot tell, and the device then takes full images only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use schemas::msg::Kind;
use schemas::ComponentName;

use super::event::{BootOutcome, InstallRequest};
use super::image::{ImageBytes, ImageSource};

/// Installs images. See the module doc.
pub trait Installer: Send + 'static {
    /// Installs `req`'s image, read from `image`.
    fn install(&mut self, req: &InstallRequest, image: &ImageSource) -> Result<(), String>;

    /// Boots into the firmware `install` wrote and checks its health.
    fn boot(&mut self, req: &InstallRequest) -> BootOutcome;

    /// The running image of `component`, if the installer can read it.
    fn installed(&mut self, _component: &ComponentName) -> Option<ImageBytes> {
        None
    }
}

/// The simulator's installer: images are kept in memory (shared, not
/// copied); failures on request.
#[derive(Debug, Clone, Default)]
pub struct MemoryInstaller {
    /// Every install fails (`install_failed`).
    pub fail_install: bool,
    /// Every firmware boot fails (`rolled_back` / `boot_failed`).
    pub fail_boot: bool,
    /// These versions fail (a bad build): a firmware's boot, an app's or
    /// config's install.
    pub fail_versions: Vec<String>,
    /// Installs done, for tests.
    pub installed: Vec<InstallRequest>,
    /// The running image of each component: the factory image at first,
    /// then each installed one. A component without one takes full images
    /// only (E3 needs the installed bytes).
    pub images: BTreeMap<ComponentName, ImageBytes>,
    /// A firmware written and waiting for its boot.
    pub staged: Option<(ComponentName, ImageBytes)>,
}

impl MemoryInstaller {
    /// An installer whose `component` runs `image` (a factory image).
    pub fn with_image(mut self, component: ComponentName, image: ImageBytes) -> Self {
        self.images.insert(component, image);
        self
    }
}

impl Installer for MemoryInstaller {
    fn install(&mut self, req: &InstallRequest, image: &ImageSource) -> Result<(), String> {
        if self.fail_install {
            return Err(format!("simulated install failure of {}", req.artifact));
        }
        if req.kind != Kind::Firmware && self.fail_versions.contains(&req.version) {
            return Err(format!("simulated bad build {}", req.version));
        }
        // Without the bytes (a store that keeps files) the install still
        // counts; the component's image is then unknown.
        let bytes = match image {
            ImageSource::Memory(b) => Some(b.clone()),
            ImageSource::File(p) => std::fs::read(p).ok().map(ImageBytes::new),
            ImageSource::Missing(_) => None,
        };
        if let Some(b) = &bytes {
            if b.len() != req.size {
                return Err(format!(
                    "image of {} bytes, the manifest says {}",
                    b.len(),
                    req.size
                ));
            }
        }
        match (req.kind, bytes) {
            (Kind::Firmware, Some(b)) => self.staged = Some((req.component.clone(), b)),
            (Kind::Firmware, None) => self.staged = None,
            (_, Some(b)) => {
                self.images.insert(req.component.clone(), b);
            }
            (_, None) => {
                self.images.remove(&req.component);
            }
        }
        self.installed.push(req.clone());
        Ok(())
    }

    fn boot(&mut self, req: &InstallRequest) -> BootOutcome {
        let staged = self.staged.take();
        if self.fail_boot || self.fail_versions.contains(&req.version) {
            return BootOutcome::RolledBack {
                detail: format!("simulated boot failure of {}", req.version),
            };
        }
        match staged {
            Some((c, b)) if c == req.component => {
                self.images.insert(c, b);
            }
            _ => {
                self.images.remove(&req.component);
            }
        }
        BootOutcome::Healthy
    }

    fn installed(&mut self, component: &ComponentName) -> Option<ImageBytes> {
        self.images.get(component).cloned()
    }
}

/// Installs images as files under a directory and runs a health check
/// command.
///
/// Layout under `root`: `{component}` is the running image; `{component}.next`
/// a firmware waiting for its boot; `{component}.prev` the one to fall back
/// to. The health check runs with `OTA_COMPONENT`, `OTA_VERSION` and
/// `OTA_IMAGE` (the new image's path) in its environment; exit status 0 is
/// healthy.
#[derive(Debug, Clone)]
pub struct FileInstaller {
    root: PathBuf,
    health_check: Option<Vec<String>>,
    timeout: Duration,
}

impl FileInstaller {
    /// An installer writing under `root`, with an optional health check
    /// command (program and arguments).
    pub fn new(root: impl Into<PathBuf>, health_check: Option<Vec<String>>) -> Self {
        Self {
            root: root.into(),
            health_check,
            timeout: Duration::from_secs(60),
        }
    }

    /// How long the health check may run (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn path(&self, req: &InstallRequest, suffix: &str) -> PathBuf {
        self.root.join(format!("{}{suffix}", req.component))
    }

    /// Runs the health check on the image now at `current`.
    fn healthy(&self, req: &InstallRequest, current: &Path) -> Result<(), String> {
        let Some(cmd) = &self.health_check else {
            return Ok(());
        };
        let Some((program, args)) = cmd.split_first() else {
            return Ok(());
        };
        let mut child = Command::new(program)
            .args(args)
            .env("OTA_COMPONENT", req.component.as_str())
            .env("OTA_VERSION", &req.version)
            .env("OTA_IMAGE", current)
            .spawn()
            .map_err(|e| format!("health check {program} did not start: {e}"))?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("health check {status}")),
                Ok(None) if started.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "health check still running after {:?}",
                        self.timeout
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("health check: {e}")),
            }
        }
    }

    /// Puts `new` in place of the running image, keeping the old as `.prev`.
    fn swap_in(&self, req: &InstallRequest, new: &Path) -> Result<(), String> {
        let current = self.path(req, "");
        let prev = self.path(req, ".prev");
        if current.exists() {
            std::fs::rename(&current, &prev)
                .map_err(|e| format!("keeping {}: {e}", current.display()))?;
        }
        std::fs::rename(new, &current).map_err(|e| format!("installing {}: {e}", current.display()))
    }

    /// Restores `.prev` as the running image.
    fn fall_back(&self, req: &InstallRequest) {
        let prev = self.path(req, ".prev");
        if prev.exists() {
            let _ = std::fs::rename(prev, self.path(req, ""));
        }
    }
}

impl Installer for FileInstaller {
    fn install(&mut self, req: &InstallRequest, image: &ImageSource) -> Result<(), String> {
        let image = match image {
            ImageSource::File(p) => p.as_path(),
            ImageSource::Memory(_) => return Err("no image file to install from".into()),
            ImageSource::Missing(why) => return Err(why.clone()),
        };
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("creating {}: {e}", self.root.display()))?;
        let staged = self.path(req, ".next");
        std::fs::copy(image, &staged)
            .map_err(|e| format!("copying the image to {}: {e}", staged.display()))?;
        if let Ok(f) = std::fs::File::open(&staged) {
            let _ = f.sync_all();
        }
        if req.kind == Kind::Firmware {
            // Booted into by `boot`.
            return Ok(());
        }
        self.swap_in(req, &staged)?;
        match self.healthy(req, &self.path(req, "")) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fall_back(req);
                Err(e)
            }
        }
    }

    fn boot(&mut self, req: &InstallRequest) -> BootOutcome {
        let staged = self.path(req, ".next");
        if !staged.exists() {
            // Already swapped by a boot that was cut short: check it.
            return match self.healthy(req, &self.path(req, "")) {
                Ok(()) => BootOutcome::Healthy,
                Err(detail) => {
                    self.fall_back(req);
                    BootOutcome::RolledBack { detail }
                }
            };
        }
        if let Err(detail) = self.swap_in(req, &staged) {
            return BootOutcome::RolledBack { detail };
        }
        match self.healthy(req, &self.path(req, "")) {
            Ok(()) => BootOutcome::Healthy,
            Err(detail) => {
                self.fall_back(req);
                BootOutcome::RolledBack { detail }
            }
        }
    }

    fn installed(&mut self, component: &ComponentName) -> Option<ImageBytes> {
        let path = self.root.join(component.as_str());
        std::fs::read(path).ok().map(ImageBytes::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{ArtifactId, CampaignId, ComponentName};

    fn req(kind: Kind) -> InstallRequest {
        InstallRequest {
            campaign: CampaignId::new("c").unwrap(),
            artifact: ArtifactId::new("a").unwrap(),
            kind,
            component: ComponentName::new("main").unwrap(),
            version: "1.3.0".into(),
            size: 3,
        }
    }

    /// A temp dir holding the image `new` (its path first) and a root
    /// where `main` is `old` (its path second).
    fn new_over_old() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, b"new").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("main"), b"old").unwrap();
        (dir, img, root)
    }

    #[test]
    fn app_installs_in_place_and_falls_back_when_unhealthy() {
        let (_dir, img, root) = new_over_old();
        let mut ok = FileInstaller::new(&root, Some(vec!["true".into()]));
        ok.install(&req(Kind::App), &ImageSource::File(img.clone()))
            .unwrap();
        assert_eq!(std::fs::read(root.join("main")).unwrap(), b"new");

        std::fs::write(root.join("main"), b"old").unwrap();
        let check = vec![
            "sh".into(),
            "-c".into(),
            "test \"$OTA_VERSION\" = 9.9.9".into(),
        ];
        let mut bad = FileInstaller::new(&root, Some(check));
        let e = bad
            .install(&req(Kind::App), &ImageSource::File(img.clone()))
            .unwrap_err();
        assert!(e.contains("health check"), "{e}");
        assert_eq!(std::fs::read(root.join("main")).unwrap(), b"old");
    }

    #[test]
    fn firmware_boots_into_the_new_image_or_rolls_back() {
        let (_dir, img, root) = new_over_old();
        let mut i = FileInstaller::new(&root, Some(vec!["true".into()]));
        i.install(&req(Kind::Firmware), &ImageSource::File(img.clone()))
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("main")).unwrap(),
            b"old",
            "not before the boot"
        );
        assert_eq!(i.boot(&req(Kind::Firmware)), BootOutcome::Healthy);
        assert_eq!(std::fs::read(root.join("main")).unwrap(), b"new");

        std::fs::write(root.join("main"), b"old").unwrap();
        let mut bad = FileInstaller::new(&root, Some(vec!["false".into()]));
        bad.install(&req(Kind::Firmware), &ImageSource::File(img.clone()))
            .unwrap();
        assert!(matches!(
            bad.boot(&req(Kind::Firmware)),
            BootOutcome::RolledBack { .. }
        ));
        assert_eq!(std::fs::read(root.join("main")).unwrap(), b"old");
    }
}
