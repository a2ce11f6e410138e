//! The evaluated build graph and the inputs of an evaluation: what the
//! frontend hands to a build.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::instructions::Instruction;
use crate::lint::{CheckConfig, Warning};
use crate::platform::Platform;
use crate::shell::EnvList;

/// What the evaluation needs besides the text.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Defaults to the build platform.
    pub platform: Option<Platform>,
    /// Defaults to the host.
    pub build_platform: Option<Platform>,
}

/// The parts of a base image's config that change how a Dockerfile evaluates.
#[derive(Debug, Clone, Default)]
pub struct BaseConfig {
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: String,
    pub shell: Vec<String>,
    pub onbuild: Vec<String>,
}

/// Looks up base images' configs; the frontend does no I/O itself.
pub trait BaseImages {
    fn config(&self, reference: &str, platform: &Platform) -> Option<BaseConfig>;
}

/// Base images are unknown: their config is taken as empty.
pub struct UnknownBases;

impl BaseImages for UnknownBases {
    fn config(&self, _: &str, _: &Platform) -> Option<BaseConfig> {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    Scratch,
    Image { reference: String },
    Stage { index: usize },
}

/// One evaluated instruction and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub line: usize,
    pub end_line: usize,
    #[serde(flatten)]
    pub instruction: Instruction,
    /// For RUN: the environment the command sees (ENV and ARG values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_env: Option<EnvList>,
    /// True for a trigger the base registered with ONBUILD, run at the start
    /// of this stage (`line` is then the stage's FROM).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub triggered: bool,
}

/// The image config a stage ends with, as far as the Dockerfile defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct StageConfig {
    pub env: EnvList,
    pub workdir: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    pub shell: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "EnvList::is_empty")]
    pub labels: EnvList,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub onbuild: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub line: usize,
    /// False when `--target` does not need this stage: it is not evaluated.
    pub needed: bool,
    /// Stages this one copies or mounts from (its base is in `base`).
    pub depends_on: Vec<usize>,
    /// External images this stage copies or mounts from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<StageConfig>,
    /// ARG and ENV values at the end of the stage, inherited by `FROM <stage>`.
    #[serde(skip)]
    pub(crate) args: EnvList,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalArg {
    pub name: String,
    pub value: Option<String>,
}

/// The result of reading a Dockerfile: everything a build needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildGraph {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax: Option<String>,
    pub escape: char,
    pub check: CheckConfig,
    pub platform: Platform,
    pub build_platform: Platform,
    pub global_args: Vec<GlobalArg>,
    pub stages: Vec<Stage>,
    pub target: usize,
    /// Stage indices in the order a build runs them (dependencies first).
    pub order: Vec<usize>,
    pub warnings: Vec<Warning>,
    /// Build arguments no ARG of the needed stages declares (Docker warns
    /// that they "were not consumed").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unused_build_args: Vec<String>,
}
