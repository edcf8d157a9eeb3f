//! The stages of a generation job as data: a stage is its units, a unit is one provider
//! call with its weight (its share of the progress bar) and the unit it needs done
//! before it starts. `pipeline.rs` runs every stage with one loop; a checkpoint records
//! each unit's output (`checkpoint.rs`).
//!
//! SCRIPT_GENERATING: the script. ASSETS_GENERATING: the voice, then one image per
//! paragraph and the avatar, in parallel (bounded by the worker's `asset_concurrency`):
//! they follow the narration (the avatar lip-syncs to the voice, each image is timed to
//! its paragraph's part of it). RENDERING: its parts, in order. THUMBNAIL_GENERATING,
//! UPLOADING: one call each.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::providers::{Asset, ProviderError, Providers, Script, weight};
use progress_hub::locale::Locale;
use progress_hub::wire::Stage;

/// Parts the video is rendered in (each reports progress).
pub const RENDER_PARTS: usize = 4;

/// One provider call of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Script,
    Voice,
    /// The image of paragraph n (from 1).
    Image(usize),
    Avatar,
    /// Part n (from 1) of the rendered video.
    RenderPart(usize),
    Thumbnail,
    Upload,
}

/// What a unit's provider call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Script(Script),
    Asset(Asset),
    /// The uploaded video's link.
    Url(String),
}

/// A unit's provider call, made again for each retry.
pub type Call = Box<dyn FnMut() -> BoxFuture<'static, Result<Output, ProviderError>> + Send>;

/// A stage: its units, in the order they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub stage: Stage,
    pub units: Vec<Unit>,
    /// Whether its units run in parallel (and its progress reports `units_done` of
    /// `units_total`).
    pub parallel: bool,
}

/// The units of `stage` for a script of `paragraphs` paragraphs.
pub fn plan(stage: Stage, paragraphs: usize) -> Plan {
    let (units, parallel) = match stage {
        Stage::ScriptGenerating => (vec![Unit::Script], false),
        Stage::AssetsGenerating => {
            let mut units = vec![Unit::Voice];
            units.extend((1..=paragraphs).map(Unit::Image));
            units.push(Unit::Avatar);
            (units, true)
        }
        Stage::Rendering => ((1..=RENDER_PARTS).map(Unit::RenderPart).collect(), false),
        Stage::ThumbnailGenerating => (vec![Unit::Thumbnail], false),
        Stage::Uploading => (vec![Unit::Upload], false),
    };
    Plan {
        stage,
        units,
        parallel,
    }
}

impl Unit {
    /// Its share of the progress bar, in units of mock work (`providers::weight`).
    pub fn weight(self) -> u32 {
        match self {
            Self::Script => weight::SCRIPT,
            Self::Voice => weight::VOICE,
            Self::Image(_) => weight::IMAGE,
            Self::Avatar => weight::AVATAR,
            Self::RenderPart(_) => weight::RENDER_PART,
            Self::Thumbnail => weight::THUMBNAIL,
            Self::Upload => weight::UPLOAD,
        }
    }

    /// The unit of its stage that must be done before it starts.
    pub fn needs(self) -> Option<Unit> {
        match self {
            Self::Image(_) | Self::Avatar => Some(Self::Voice),
            _ => None,
        }
    }

    /// Its provider call, with its inputs from what is done: the script, the voice
    /// (`None`: an input is missing, which a plan's order rules out).
    pub fn call(
        self,
        providers: &Providers,
        topic: &str,
        script: Option<&Script>,
        voice: Option<&Asset>,
    ) -> Option<Call> {
        let p = providers.clone();
        let script = || script.cloned();
        Some(match self {
            Self::Script => {
                let topic = topic.to_string();
                Box::new(move || {
                    let (p, topic) = (p.clone(), topic.clone());
                    async move { p.script.write_script(&topic).await.map(Output::Script) }.boxed()
                })
            }
            Self::Voice => {
                let script = script()?;
                Box::new(move || {
                    let (p, script) = (p.clone(), script.clone());
                    async move { p.voice.synthesize(&script).await.map(Output::Asset) }.boxed()
                })
            }
            Self::Image(n) => {
                let paragraph = script()?.paragraphs.get(n.checked_sub(1)?)?.clone();
                Box::new(move || {
                    let (p, paragraph) = (p.clone(), paragraph.clone());
                    async move {
                        p.images
                            .generate_image(&paragraph, n)
                            .await
                            .map(Output::Asset)
                    }
                    .boxed()
                })
            }
            Self::Avatar => {
                let voice = voice?.clone();
                Box::new(move || {
                    let (p, voice) = (p.clone(), voice.clone());
                    async move { p.avatar.generate_avatar(&voice).await.map(Output::Asset) }.boxed()
                })
            }
            Self::RenderPart(part) => Box::new(move || {
                let p = p.clone();
                async move {
                    p.renderer
                        .render_part(part, RENDER_PARTS)
                        .await
                        .map(Output::Asset)
                }
                .boxed()
            }),
            Self::Thumbnail => {
                let script = script()?;
                Box::new(move || {
                    let (p, script) = (p.clone(), script.clone());
                    async move {
                        p.thumbnail
                            .generate_thumbnail(&script)
                            .await
                            .map(Output::Asset)
                    }
                    .boxed()
                })
            }
            Self::Upload => {
                let title = script()?.title;
                Box::new(move || {
                    let (p, title) = (p.clone(), title.clone());
                    async move { p.uploader.upload(&title).await.map(Output::Url) }.boxed()
                })
            }
        })
    }
}

/// The log line a stage opens with, if any.
pub fn opening_line(locale: Locale, stage: Stage) -> Option<&'static str> {
    let (zh, en) = match stage {
        Stage::ScriptGenerating => ("開始生成腳本...", "Writing the script..."),
        Stage::AssetsGenerating => return None,
        Stage::Rendering => ("開始渲染影片...", "Rendering the video..."),
        Stage::ThumbnailGenerating => ("正在生成封面...", "Generating the thumbnail..."),
        Stage::Uploading => ("正在上傳到 YouTube...", "Uploading to YouTube..."),
    };
    Some(locale.pick(zh, en))
}

/// The log line before a unit's call, if any (the script: for the paragraphs).
pub fn before_line(locale: Locale, unit: Unit, script: Option<&Script>) -> Option<String> {
    match unit {
        Unit::Voice => Some(
            locale
                .pick("開始生成語音...", "Synthesizing the voice...")
                .into(),
        ),
        Unit::Image(n) => {
            let paragraphs = script.map(|s| s.paragraphs.as_slice())?;
            let total = paragraphs.len();
            let title = &paragraphs.get(n.checked_sub(1)?)?.title;
            Some(match locale {
                Locale::ZhTw => format!("[{n}/{total}] 正在生成圖片: 段落 {n} - {title}"),
                Locale::En => format!("[{n}/{total}] Generating image: paragraph {n} - {title}"),
            })
        }
        Unit::Avatar => Some(
            locale
                .pick("正在生成虛擬主播...", "Generating the avatar...")
                .into(),
        ),
        _ => None,
    }
}

/// The log line after a unit's output is recorded, if any.
pub fn after_line(locale: Locale, unit: Unit, output: &Output) -> Option<String> {
    match (unit, output) {
        (Unit::Script, Output::Script(script)) => Some(match locale {
            Locale::ZhTw => format!(
                "腳本完成：{}（{} 段）",
                script.title,
                script.paragraphs.len()
            ),
            Locale::En => format!(
                "Script ready: {} ({} paragraphs)",
                script.title,
                script.paragraphs.len()
            ),
        }),
        (Unit::RenderPart(part), _) => Some(render_text(locale, part)),
        (Unit::Upload, Output::Url(url)) => {
            Some(format!("{}{url}", locale.pick("上傳完成：", "Uploaded: ")))
        }
        _ => None,
    }
}

/// The `current_stage` text of the progress a unit's end publishes (`images`: how many
/// of the script's `paragraphs` have their image, this unit's output included).
pub fn progress_text(locale: Locale, unit: Unit, images: usize, paragraphs: usize) -> String {
    let text = |zh: &str, en: &str| locale.pick(zh, en).to_string();
    match unit {
        Unit::Script => text("腳本已完成", "Script ready"),
        Unit::Voice => text("語音已完成", "Voice ready"),
        Unit::Image(_) => match locale {
            Locale::ZhTw => format!("正在生成圖片 ({images}/{paragraphs})"),
            Locale::En => format!("Generating images ({images}/{paragraphs})"),
        },
        Unit::Avatar => text("虛擬主播已完成", "Avatar ready"),
        Unit::RenderPart(part) => render_text(locale, part),
        Unit::Thumbnail => text("封面已完成", "Thumbnail ready"),
        Unit::Upload => text("上傳完成", "Upload complete"),
    }
}

fn render_text(locale: Locale, part: usize) -> String {
    match locale {
        Locale::ZhTw => format!("正在渲染影片 ({part}/{RENDER_PARTS})"),
        Locale::En => format!("Rendering ({part}/{RENDER_PARTS})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_of_a_plan_is_of_its_stage_and_needs_an_earlier_one() {
        for stage in Stage::ALL {
            let plan = plan(stage, 15);
            assert!(!plan.units.is_empty());
            for (i, unit) in plan.units.iter().enumerate() {
                if let Some(need) = unit.needs() {
                    let at = plan.units.iter().position(|u| *u == need);
                    assert!(at.is_some_and(|at| at < i), "{unit:?} needs {need:?}");
                }
            }
            assert_eq!(plan.parallel, stage == Stage::AssetsGenerating);
        }
        assert_eq!(plan(Stage::AssetsGenerating, 15).units.len(), 17);
        assert_eq!(plan(Stage::Rendering, 15).units.len(), RENDER_PARTS);
    }
}
