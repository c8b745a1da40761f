//! Guests of a tenant: a small TCG domain with Nova's owner metadata
//! (`<nova:owner><nova:project uuid=…/>`), defined for one test and removed
//! when dropped. Shut off is enough to test scope (a domain one may see
//! answers "not running", one one may not "not found"); started, it shows
//! SeaBIOS's screen within a second, enough to capture.

use super::fixtures::tempdir;
use super::host::{uri, virsh};

pub struct Owned {
    pub name: String,
    pub uuid: String,
}

impl Owned {
    /// Defined, shut off; tagged with a vmshot instance id if given.
    pub fn define(name: &str, project: &str, instance: Option<&str>) -> Self {
        let tag = instance
            .map(|id| format!("<vmshot:instance xmlns:vmshot='https://vmshot.dev/xmlns/instance/1'>{id}</vmshot:instance>"))
            .unwrap_or_default();
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>\
             <metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
             <nova:owner><nova:user uuid='5e7f9a1b-0000-4000-8000-00000000aaaa'>alice</nova:user>\
             <nova:project uuid='{project}'>tenant</nova:project></nova:owner></nova:instance>{tag}</metadata>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os>\
             <devices><graphics type='vnc' autoport='yes' listen='127.0.0.1'/>\
             <video><model type='vga'/></video></devices></domain>"
        );
        let file = tempdir().join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        remove(name);
        virsh(&["define", file.to_str().unwrap()]);
        let uuid = virsh(&["domuuid", name]).trim().to_owned();
        Self {
            name: name.to_owned(),
            uuid,
        }
    }

    /// Defined and started: SeaBIOS, with no disk to boot, on its screen.
    pub fn running(name: &str, project: &str) -> Self {
        let owned = Self::define(name, project, None);
        virsh(&["start", name]);
        owned
    }

    /// Stopped and undefined now, as a deleted server is.
    pub fn remove(&self) {
        remove(&self.name);
    }
}

fn remove(name: &str) {
    for args in [["destroy", name], ["undefine", name]] {
        let _ = std::process::Command::new("virsh")
            .args(["-c", &uri()])
            .args(args)
            .output();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        remove(&self.name);
    }
}
