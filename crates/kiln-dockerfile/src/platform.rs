//! Platforms (`linux/arm64`, `linux/arm/v7`), parsed and normalised the way
//! containerd's `platforms` package does, so TARGETARCH and friends match.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// The platform of the machine kiln runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            other => other,
        };
        Platform::parse(&format!("linux/{arch}")).unwrap_or(Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: String::new(),
        })
    }

    /// Parses `os[/arch[/variant]]` or a bare architecture.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            ));
        }
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        let (os, arch, variant) = match lower.as_slice() {
            [one] if is_known_os(one) => (one.clone(), host_arch(), String::new()),
            [one] => ("linux".to_string(), one.clone(), String::new()),
            [os, arch] => (os.clone(), arch.clone(), String::new()),
            [os, arch, variant] => (os.clone(), arch.clone(), variant.clone()),
            _ => unreachable!("length checked above"),
        };
        if !is_known_os(&os) {
            return Err(format!("unknown operating system {os:?} in platform {s:?}"));
        }
        let (architecture, variant) = normalize_arch(&arch, &variant);
        if !is_known_arch(&architecture) {
            return Err(format!("unknown architecture {arch:?} in platform {s:?}"));
        }
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

fn host_arch() -> String {
    Platform::host().architecture
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "linux"
            | "windows"
            | "darwin"
            | "freebsd"
            | "netbsd"
            | "openbsd"
            | "solaris"
            | "illumos"
            | "android"
            | "aix"
    )
}

fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "amd64"
            | "386"
            | "arm"
            | "arm64"
            | "ppc64le"
            | "ppc64"
            | "s390x"
            | "riscv64"
            | "mips64le"
            | "mips64"
            | "mipsle"
            | "mips"
            | "loong64"
            | "wasm"
    )
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let v = variant.to_string();
    match arch {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            ("amd64".into(), if v == "v1" { String::new() } else { v })
        }
        "aarch64" | "arm64" => (
            "arm64".into(),
            if v == "8" || v == "v8" {
                String::new()
            } else {
                v
            },
        ),
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => (
            "arm".into(),
            match v.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{v}"),
                _ => v,
            },
        ),
        other => (other.to_string(), v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let table = [
            ("linux/amd64", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("arm64", "linux/arm64"),
            ("LINUX/AMD64", "linux/amd64"),
        ];
        for (input, want) in table {
            assert_eq!(Platform::parse(input).unwrap().to_string(), want, "{input}");
        }
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("plan9/amd64").is_err());
        assert!(Platform::parse("linux/amd64/v3/x").is_err());
    }
}
