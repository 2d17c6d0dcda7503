//! The installer of a test device: the simulator's in-memory installer,
//! whose running images the test reads back by hash (to check that a
//! device rebuilt or downloaded exactly the target).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use device_sim::agent::MemoryInstaller;
use device_sim::agent::{BootOutcome, ImageBytes, ImageSource, InstallRequest, Installer};
use schemas::{ComponentName, DeviceId};

/// The sha256 of a running image, by device and component.
type Hashes = BTreeMap<(DeviceId, ComponentName), [u8; 32]>;

/// The sha256 of each device's running image, per component.
#[derive(Clone, Default)]
pub struct Running(Arc<Mutex<Hashes>>);

impl Running {
    /// The hash of `device`'s running `component`, if it has one.
    pub fn sha256(&self, device: &DeviceId, component: &str) -> Option<[u8; 32]> {
        let c = ComponentName::new(component).expect("a component");
        self.0.lock().unwrap().get(&(device.clone(), c)).copied()
    }
}

/// A [`MemoryInstaller`] that records its running images in [`Running`].
pub struct Recording {
    pub inner: MemoryInstaller,
    pub id: DeviceId,
    pub running: Running,
}

impl Recording {
    pub fn record(&self) {
        let mut all = self.running.0.lock().unwrap();
        all.retain(|(d, _), _| d != &self.id);
        for (c, img) in &self.inner.images {
            all.insert((self.id.clone(), c.clone()), *img.sha256());
        }
    }
}

impl Installer for Recording {
    fn install(&mut self, req: &InstallRequest, image: &ImageSource) -> Result<(), String> {
        let r = self.inner.install(req, image);
        self.record();
        r
    }

    fn boot(&mut self, req: &InstallRequest) -> BootOutcome {
        let r = self.inner.boot(req);
        self.record();
        r
    }

    fn installed(&mut self, component: &ComponentName) -> Option<ImageBytes> {
        self.inner.installed(component)
    }
}
