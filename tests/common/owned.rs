//! A TCG domain owned by a Nova project, as Nova writes it
//! (`<nova:owner><nova:project uuid=…/>`), defined for one test and
//! destroyed and undefined when dropped. Shut off by default; `start` boots
//! it to SeaBIOS's "No bootable device." screen, for a test that needs a
//! tenant's guest it can capture.

use std::process::Command;

use super::host::{uri, virsh};

pub struct Owned {
    pub name: String,
    pub uuid: String,
}

impl Owned {
    /// Defines `name` owned by `project`, with a vmshot instance id tag if given.
    pub fn define(name: &str, project: &str, instance: Option<&str>) -> Self {
        let tag = instance
            .map(|id| format!("<vmshot:instance xmlns:vmshot='https://vmshot.dev/xmlns/instance/1'>{id}</vmshot:instance>"))
            .unwrap_or_default();
        // No disk and no reboot loop (rebootTimeout -1): once started it
        // stays on one text screen, idle.
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>\
             <metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
             <nova:owner><nova:user uuid='5e7f9a1b-0000-4000-8000-00000000aaaa'>alice</nova:user>\
             <nova:project uuid='{project}'>tenant</nova:project></nova:owner></nova:instance>{tag}</metadata>\
             <os><type arch='x86_64' machine='pc'>hvm</type><bios rebootTimeout='-1'/></os>\
             <devices><graphics type='vnc' autoport='yes' listen='127.0.0.1'/>\
             <video><model type='vga'/></video><memballoon model='none'/></devices></domain>"
        );
        let dir = super::fixtures::tempdir();
        let file = dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        remove(name);
        virsh(&["define", file.to_str().unwrap()]);
        // libvirt keeps its own copy of the definition.
        let _ = std::fs::remove_dir_all(&dir);
        let uuid = virsh(&["domuuid", name]).trim().to_owned();
        Self {
            name: name.to_owned(),
            uuid,
        }
    }

    /// Boots it; its screen is SeaBIOS's within a second or two.
    pub fn start(self) -> Self {
        virsh(&["start", &self.name]);
        self
    }

    /// Defined and started, untagged.
    pub fn running(name: &str, project: &str) -> Self {
        Self::define(name, project, None).start()
    }

    /// Stopped and undefined now, as a deleted server is.
    pub fn remove(&self) {
        remove(&self.name);
    }
}

/// Destroys (if running) and undefines `name`, whatever is left of it.
fn remove(name: &str) {
    for action in ["destroy", "undefine"] {
        let _ = Command::new("virsh")
            .args(["-c", &uri(), action, name])
            .output();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        remove(&self.name);
    }
}
