//! Package URLs (`pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`), the
//! identifiers scanners match vulnerabilities by.

/// Percent-encodes all but the characters RFC 3986 leaves unreserved
/// (`A-Z a-z 0-9 - . _ ~`): a Debian epoch's `:` and a `+` are encoded.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `pkg:deb/debian/openssl@3.0.13-1~deb12u1?arch=amd64&distro=debian-12`
/// (`kind` deb or apk, `namespace` the distribution's id, `distro` its id
/// and version; qualifiers in the spec's order, by key).
pub fn package(
    kind: &str,
    namespace: &str,
    name: &str,
    version: &str,
    arch: &str,
    distro: Option<&str>,
) -> String {
    let mut q = Vec::new();
    if !arch.is_empty() {
        q.push(format!("arch={}", encode(arch)));
    }
    if let Some(d) = distro {
        q.push(format!("distro={}", encode(d)));
    }
    let query = if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    };
    format!(
        "pkg:{kind}/{}/{}@{}{query}",
        encode(&namespace.to_ascii_lowercase()),
        encode(name),
        encode(version)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_alpine_package_urls() {
        assert_eq!(
            package(
                "deb",
                "debian",
                "openssl",
                "3.0.13-1~deb12u1",
                "amd64",
                Some("debian-12")
            ),
            "pkg:deb/debian/openssl@3.0.13-1~deb12u1?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            package(
                "deb",
                "debian",
                "libc6",
                "1:2.36-9+deb12u4",
                "arm64",
                Some("debian-12")
            ),
            "pkg:deb/debian/libc6@1%3A2.36-9%2Bdeb12u4?arch=arm64&distro=debian-12"
        );
        assert_eq!(
            package(
                "apk",
                "alpine",
                "musl",
                "1.2.5-r0",
                "x86_64",
                Some("alpine-3.20.3")
            ),
            "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3"
        );
    }
}
