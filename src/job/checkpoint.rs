//! What a job has finished so far: the output of every provider call that returned
//! (the script, the asset references, the rendered parts, the upload's URL). It is kept
//! with the job in the queue (in Redis next to the job's entry, with the same lifetime),
//! recorded after each call, so a worker that takes the job over starts at the first
//! unfinished step and pays no provider twice for work that was done.
//!
//! Small by design: references and text, never media (a full run is about 2 KB).

use serde::{Deserialize, Serialize};

use super::providers::{Asset, Script, weight};
use crate::wire::Stage;

/// Parts the video is rendered in (each reports progress).
pub const RENDER_PARTS: usize = 4;

/// Units of work of a whole run (see `providers::weight`).
pub fn total_units(paragraphs: usize) -> u32 {
    weight::SCRIPT
        + weight::VOICE
        + weight::IMAGE * paragraphs as u32
        + weight::AVATAR
        + weight::RENDER_PART * RENDER_PARTS as u32
        + weight::THUMBNAIL
        + weight::UPLOAD
}

/// The paragraphs a mock script has, before the script exists (for the first progress).
pub const EXPECTED_PARAGRAPHS: usize = 15;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    pub script: Option<Script>,
    pub voice: Option<Asset>,
    /// One per paragraph, in order; a prefix while the stage runs.
    pub images: Vec<Asset>,
    pub avatar: Option<Asset>,
    /// One per part, in order; a prefix while the stage runs.
    pub render_parts: Vec<Asset>,
    pub thumbnail: Option<Asset>,
    pub youtube_url: Option<String>,
}

impl Checkpoint {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn paragraphs(&self) -> usize {
        self.script
            .as_ref()
            .map_or(EXPECTED_PARAGRAPHS, |s| s.paragraphs.len())
    }

    /// Whether every step of `stage` is done.
    pub fn finished(&self, stage: Stage) -> bool {
        match stage {
            Stage::ScriptGenerating => self.script.is_some(),
            Stage::AssetsGenerating => {
                self.script.is_some()
                    && self.voice.is_some()
                    && self.images.len() >= self.paragraphs()
                    && self.avatar.is_some()
            }
            Stage::Rendering => self.render_parts.len() >= RENDER_PARTS,
            Stage::ThumbnailGenerating => self.thumbnail.is_some(),
            Stage::Uploading => self.youtube_url.is_some(),
        }
    }

    /// The stage a run of this job is in: the first one not finished (None: all are).
    pub fn current_stage(&self) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| !self.finished(*s))
    }

    /// Units of work done, by the weights of the steps recorded.
    pub fn done_units(&self) -> u32 {
        let some = |done: bool, units: u32| if done { units } else { 0 };
        some(self.script.is_some(), weight::SCRIPT)
            + some(self.voice.is_some(), weight::VOICE)
            + weight::IMAGE * self.images.len() as u32
            + some(self.avatar.is_some(), weight::AVATAR)
            + weight::RENDER_PART * self.render_parts.len() as u32
            + some(self.thumbnail.is_some(), weight::THUMBNAIL)
            + some(self.youtube_url.is_some(), weight::UPLOAD)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a recorded checkpoint; one that cannot be read is no checkpoint (the job
    /// starts over rather than not at all).
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::providers::Paragraph;

    fn asset(name: &str) -> Asset {
        Asset { name: name.into() }
    }

    #[test]
    fn the_current_stage_is_the_first_unfinished_one() {
        let mut c = Checkpoint::default();
        assert!(c.is_empty());
        assert_eq!(c.current_stage(), Some(Stage::ScriptGenerating));
        assert_eq!(c.done_units(), 0);
        c.script = Some(Script {
            title: "t".into(),
            paragraphs: vec![
                Paragraph {
                    title: "a".into(),
                    text: "a".into()
                };
                2
            ],
        });
        c.voice = Some(asset("voice"));
        c.images = vec![asset("image-01")];
        assert_eq!(c.current_stage(), Some(Stage::AssetsGenerating));
        c.images.push(asset("image-02"));
        c.avatar = Some(asset("avatar"));
        assert_eq!(c.current_stage(), Some(Stage::Rendering));
        c.render_parts = (1..=RENDER_PARTS)
            .map(|n| asset(&format!("part-{n}")))
            .collect();
        c.thumbnail = Some(asset("thumb"));
        assert_eq!(c.current_stage(), Some(Stage::Uploading));
        c.youtube_url = Some("https://youtube.com/watch?v=x".into());
        assert_eq!(c.current_stage(), None);
        assert_eq!(c.done_units(), total_units(2));
        assert_eq!(Checkpoint::from_json(&c.to_json()), Some(c));
        assert_eq!(Checkpoint::from_json("{}"), Some(Checkpoint::default()));
        assert_eq!(Checkpoint::from_json("nope"), None);
    }
}
