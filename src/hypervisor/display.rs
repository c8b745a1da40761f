//! What a domain's XML says about its screens.
//!
//! libvirt numbers screens across the heads of all video devices, in order; a
//! video model of `none` (or no video element) means QEMU has no console to
//! capture at all.

/// How many screens a domain has; zero when it has no display device.
pub(crate) fn screen_count(domain_xml: &str) -> Result<u32, roxmltree::Error> {
    Ok(screens_in(&roxmltree::Document::parse(domain_xml)?))
}

/// `screen_count` of a parsed domain XML, for callers that read more of it.
pub(crate) fn screens_in(doc: &roxmltree::Document) -> u32 {
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("video") && n.parent().is_some_and(|p| p.has_tag_name("devices"))
        })
        .filter_map(|video| video.children().find(|n| n.has_tag_name("model")))
        .filter(|model| model.attribute("type") != Some("none"))
        .map(|model| {
            model
                .attribute("heads")
                .and_then(|h| h.parse().ok())
                .unwrap_or(1u32)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::screen_count;

    fn domain(devices: &str) -> String {
        format!("<domain type='qemu'><name>d</name><devices>{devices}</devices></domain>")
    }

    #[test]
    fn counts_heads_across_video_devices() {
        let xml = domain(
            "<video><model type='vga' heads='1'/></video>\
             <video><model type='qxl' heads='2'/></video>",
        );
        assert_eq!(screen_count(&xml).unwrap(), 3);
    }

    #[test]
    fn a_model_without_heads_has_one() {
        assert_eq!(
            screen_count(&domain("<video><model type='virtio'/></video>")).unwrap(),
            1
        );
    }

    #[test]
    fn none_model_and_missing_video_have_no_screen() {
        assert_eq!(
            screen_count(&domain("<video><model type='none'/></video>")).unwrap(),
            0
        );
        assert_eq!(screen_count(&domain("<graphics type='vnc'/>")).unwrap(), 0);
    }

    #[test]
    fn malformed_xml_is_an_error() {
        assert!(screen_count("<domain><devices>").is_err());
    }
}
