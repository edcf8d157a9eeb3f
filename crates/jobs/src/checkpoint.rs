//! What a job has finished so far: the output of every provider call that returned
//! (the script, the asset references, the rendered parts, the upload's URL). It is kept
//! with the job in the queue (in Redis next to the job's entry, with the same lifetime),
//! recorded after each call, so a worker that takes the job over starts at the first
//! unfinished step and pays no provider twice for work that was done.
//!
//! Small by design: references and text, never media (a full run is about 2 KB).

use serde::{Deserialize, Serialize};

use super::providers::{Asset, Script};
pub use super::stages::RENDER_PARTS;
use super::stages::{Output, Unit, plan};
use progress_hub::wire::Stage;

/// Units of work of a whole run (see `providers::weight`).
pub fn total_units(paragraphs: usize) -> u32 {
    Stage::ALL
        .into_iter()
        .flat_map(|stage| plan(stage, paragraphs).units)
        .map(Unit::weight)
        .sum()
}

/// The paragraphs a mock script has, before the script exists (for the first progress).
pub const EXPECTED_PARAGRAPHS: usize = 15;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    pub script: Option<Script>,
    pub voice: Option<Asset>,
    /// By paragraph (the first at 0); `None` (null) for one not made yet: images are
    /// made in parallel and finish in any order.
    pub images: Vec<Option<Asset>>,
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

    /// Whether `unit`'s output is recorded.
    pub fn has(&self, unit: Unit) -> bool {
        match unit {
            Unit::Script => self.script.is_some(),
            Unit::Voice => self.voice.is_some(),
            Unit::Image(n) => n
                .checked_sub(1)
                .and_then(|i| self.images.get(i))
                .is_some_and(Option::is_some),
            Unit::Avatar => self.avatar.is_some(),
            Unit::RenderPart(n) => n >= 1 && self.render_parts.len() >= n,
            Unit::Thumbnail => self.thumbnail.is_some(),
            Unit::Upload => self.youtube_url.is_some(),
        }
    }

    /// Records `unit`'s output. Render parts are made in order: part n is recorded once
    /// the parts before it are. An output of another kind than the unit's is ignored.
    pub fn put(&mut self, unit: Unit, output: Output) {
        match (unit, output) {
            (Unit::Script, Output::Script(script)) => self.script = Some(script),
            (Unit::Voice, Output::Asset(a)) => self.voice = Some(a),
            (Unit::Image(n), Output::Asset(a)) if n >= 1 => {
                if self.images.len() < n {
                    self.images.resize(n, None);
                }
                self.images[n - 1] = Some(a);
            }
            (Unit::Avatar, Output::Asset(a)) => self.avatar = Some(a),
            (Unit::RenderPart(n), Output::Asset(a)) if self.render_parts.len() + 1 == n => {
                self.render_parts.push(a);
            }
            (Unit::Thumbnail, Output::Asset(a)) => self.thumbnail = Some(a),
            (Unit::Upload, Output::Url(url)) => self.youtube_url = Some(url),
            _ => {}
        }
    }

    /// Whether every unit of `stage` is done.
    pub fn finished(&self, stage: Stage) -> bool {
        // The assets' plan is the script's: none before it exists.
        (stage == Stage::ScriptGenerating || self.script.is_some())
            && plan(stage, self.paragraphs())
                .units
                .into_iter()
                .all(|u| self.has(u))
    }

    /// The stage a run of this job is in: the first one not finished (None: all are).
    pub fn current_stage(&self) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| !self.finished(*s))
    }

    /// Units of work done, by the weights of the units recorded.
    pub fn done_units(&self) -> u32 {
        Stage::ALL
            .into_iter()
            .flat_map(|stage| plan(stage, self.paragraphs()).units)
            .filter(|u| self.has(*u))
            .map(Unit::weight)
            .sum()
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
    use crate::providers::Paragraph;
    use crate::stages::{Output, Unit};

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
        c.images = vec![None, Some(asset("image-02"))];
        assert_eq!(c.current_stage(), Some(Stage::AssetsGenerating));
        assert!(c.has(Unit::Image(2)) && !c.has(Unit::Image(1)));
        c.put(Unit::Image(1), Output::Asset(asset("image-01")));
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
        // A checkpoint recorded before images were made in parallel (all of them in
        // order, no nulls) reads the same.
        let old = r#"{"images":[{"name":"image-01"},{"name":"image-02"}]}"#;
        let read = Checkpoint::from_json(old).unwrap();
        assert!(read.has(Unit::Image(1)) && read.has(Unit::Image(2)));
    }
}
