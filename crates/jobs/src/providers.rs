//! The model and platform APIs a generation job calls, as traits, with mock
//! implementations (no network). Real providers plug in behind the same traits.
//!
//! A mock waits its configured delay (times the call's weight) and can be told to fail
//! transiently n times per stage, to exercise retries. It can log every call it starts
//! to a file (`CallLog`), so that a test sees which provider was paid how often, across
//! worker processes and a SIGKILL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use progress_hub::catalog::ErrorCode;
use progress_hub::locale::Locale;
use progress_hub::wire::Stage;

/// A failed provider call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProviderError {
    pub code: ErrorCode,
    pub message: String,
    /// Whether calling again may succeed.
    pub retryable: bool,
}

/// Something a provider produced (a file, in a real deployment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paragraph {
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub title: String,
    pub paragraphs: Vec<Paragraph>,
}

#[async_trait]
pub trait ScriptWriter: Send + Sync {
    /// The LLM step: a title and about 15 paragraphs on `topic`.
    async fn write_script(&self, topic: &str) -> Result<Script, ProviderError>;
}

#[async_trait]
pub trait VoiceSynthesizer: Send + Sync {
    async fn synthesize(&self, script: &Script) -> Result<Asset, ProviderError>;
}

#[async_trait]
pub trait ImageGenerator: Send + Sync {
    async fn generate_image(
        &self,
        paragraph: &Paragraph,
        index: usize,
    ) -> Result<Asset, ProviderError>;
}

#[async_trait]
pub trait AvatarGenerator: Send + Sync {
    async fn generate_avatar(&self, voice: &Asset) -> Result<Asset, ProviderError>;
}

#[async_trait]
pub trait VideoRenderer: Send + Sync {
    /// Renders one of `parts` segments of the video.
    async fn render_part(&self, part: usize, parts: usize) -> Result<Asset, ProviderError>;
}

#[async_trait]
pub trait ThumbnailGenerator: Send + Sync {
    async fn generate_thumbnail(&self, script: &Script) -> Result<Asset, ProviderError>;
}

#[async_trait]
pub trait Uploader: Send + Sync {
    /// Uploads the video; returns its YouTube URL.
    async fn upload(&self, title: &str) -> Result<String, ProviderError>;
}

/// Every provider a job needs.
#[derive(Clone)]
pub struct Providers {
    pub script: Arc<dyn ScriptWriter>,
    pub voice: Arc<dyn VoiceSynthesizer>,
    pub images: Arc<dyn ImageGenerator>,
    pub avatar: Arc<dyn AvatarGenerator>,
    pub renderer: Arc<dyn VideoRenderer>,
    pub thumbnail: Arc<dyn ThumbnailGenerator>,
    pub uploader: Arc<dyn Uploader>,
}

/// Relative cost of each mock call, in units of the mock delay: a full run is
/// script 3 + voice 2 + 15 images + avatar 3 + 4 render parts × 2 + thumbnail 1 +
/// upload 4 = 36 units.
pub mod weight {
    pub const SCRIPT: u32 = 3;
    pub const VOICE: u32 = 2;
    pub const IMAGE: u32 = 1;
    pub const AVATAR: u32 = 3;
    pub const RENDER_PART: u32 = 2;
    pub const THUMBNAIL: u32 = 1;
    pub const UPLOAD: u32 = 4;
}

/// A file every mock call is logged to when it starts, one line `<STAGE> <step>`: what
/// a real deployment would be billed for. Appended with one write per line (O_APPEND),
/// so several worker processes may share it; a call cut short by a kill is in it too.
#[derive(Debug, Clone)]
pub struct CallLog {
    path: PathBuf,
}

impl CallLog {
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
        }
    }

    /// Logs one call; a log that cannot be written is reported, never fails the call.
    fn record(&self, stage: Stage, step: &str) {
        let line = format!("{} {step}\n", stage.as_str());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(err) = written {
            tracing::warn!(path = %self.path.display(), error = %err, "could not log a mock provider call");
        }
    }
}

/// The shared behaviour of every mock: log the call, wait, then maybe fail.
#[derive(Clone)]
struct Mock {
    delay: Duration,
    /// Transient failures still to inject in this mock's stage.
    failures: Arc<AtomicU32>,
    code: ErrorCode,
    locale: Locale,
    stage: Stage,
    calls: Option<CallLog>,
}

impl Mock {
    async fn call(&self, units: u32, step: &str) -> Result<(), ProviderError> {
        if let Some(log) = &self.calls {
            log.record(self.stage, step);
        }
        tokio::time::sleep(self.delay * units).await;
        let injected = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            let entry = self.code.entry();
            return Err(ProviderError {
                code: self.code,
                message: format!(
                    "{} ({})",
                    entry.message(self.locale),
                    self.locale
                        .pick("模擬的暫時性錯誤", "injected transient failure")
                ),
                retryable: true,
            });
        }
        Ok(())
    }
}

const PARAGRAPHS_ZH: [&str; 15] = [
    "科技趨勢展望",
    "AI 應用場景",
    "產業現況",
    "關鍵技術",
    "市場規模",
    "成功案例",
    "挑戰與風險",
    "法規與倫理",
    "人才需求",
    "投資機會",
    "國際比較",
    "台灣的角色",
    "未來五年",
    "行動建議",
    "結語",
];
const PARAGRAPHS_EN: [&str; 15] = [
    "Trends ahead",
    "Where AI is used",
    "The industry today",
    "Key technologies",
    "Market size",
    "Success stories",
    "Challenges and risks",
    "Rules and ethics",
    "Skills in demand",
    "Investment opportunities",
    "Around the world",
    "Our part",
    "The next five years",
    "What to do now",
    "Closing",
];

struct MockScript(Mock);
struct MockVoice(Mock);
struct MockImages(Mock);
struct MockAvatar(Mock);
struct MockRenderer(Mock);
struct MockThumbnail(Mock);
struct MockUploader(Mock);

#[async_trait]
impl ScriptWriter for MockScript {
    async fn write_script(&self, topic: &str) -> Result<Script, ProviderError> {
        self.0.call(weight::SCRIPT, "script").await?;
        let titles = match self.0.locale {
            Locale::ZhTw => PARAGRAPHS_ZH,
            Locale::En => PARAGRAPHS_EN,
        };
        Ok(Script {
            title: format!(
                "{topic}{}",
                self.0.locale.pick("：完整解析", ": the full story")
            ),
            paragraphs: titles
                .iter()
                .map(|t| Paragraph {
                    title: t.to_string(),
                    text: format!("{topic} — {t}"),
                })
                .collect(),
        })
    }
}

#[async_trait]
impl VoiceSynthesizer for MockVoice {
    async fn synthesize(&self, _script: &Script) -> Result<Asset, ProviderError> {
        self.0.call(weight::VOICE, "voice").await?;
        Ok(Asset {
            name: "voice.mp3".into(),
        })
    }
}

#[async_trait]
impl ImageGenerator for MockImages {
    async fn generate_image(
        &self,
        _paragraph: &Paragraph,
        index: usize,
    ) -> Result<Asset, ProviderError> {
        self.0
            .call(weight::IMAGE, &format!("image-{index:02}"))
            .await?;
        Ok(Asset {
            name: format!("image-{index:02}.png"),
        })
    }
}

#[async_trait]
impl AvatarGenerator for MockAvatar {
    async fn generate_avatar(&self, _voice: &Asset) -> Result<Asset, ProviderError> {
        self.0.call(weight::AVATAR, "avatar").await?;
        Ok(Asset {
            name: "avatar.mp4".into(),
        })
    }
}

#[async_trait]
impl VideoRenderer for MockRenderer {
    async fn render_part(&self, part: usize, _parts: usize) -> Result<Asset, ProviderError> {
        self.0
            .call(weight::RENDER_PART, &format!("part-{part}"))
            .await?;
        Ok(Asset {
            name: format!("part-{part}.mp4"),
        })
    }
}

#[async_trait]
impl ThumbnailGenerator for MockThumbnail {
    async fn generate_thumbnail(&self, _script: &Script) -> Result<Asset, ProviderError> {
        self.0.call(weight::THUMBNAIL, "thumbnail").await?;
        Ok(Asset {
            name: "thumbnail.png".into(),
        })
    }
}

#[async_trait]
impl Uploader for MockUploader {
    async fn upload(&self, _title: &str) -> Result<String, ProviderError> {
        self.0.call(weight::UPLOAD, "upload").await?;
        use rand::Rng;
        let id: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(11)
            .map(char::from)
            .collect();
        Ok(format!("https://youtube.com/watch?v={id}"))
    }
}

impl Providers {
    /// Mock providers waiting `delay` per unit of work, failing transiently as many
    /// times per stage as `failures` says, logging their calls to `calls` if given.
    pub fn mock(
        delay: Duration,
        failures: &BTreeMap<Stage, u32>,
        locale: Locale,
        calls: Option<CallLog>,
    ) -> Self {
        let mock = |stage: Stage, code: ErrorCode| Mock {
            delay,
            failures: Arc::new(AtomicU32::new(failures.get(&stage).copied().unwrap_or(0))),
            code,
            locale,
            stage,
            calls: calls.clone(),
        };
        // The providers of one stage share its failure budget.
        let assets = mock(Stage::AssetsGenerating, ErrorCode::StabilityAiError);
        Self {
            script: Arc::new(MockScript(mock(
                Stage::ScriptGenerating,
                ErrorCode::GeminiApiError,
            ))),
            voice: Arc::new(MockVoice(Mock {
                code: ErrorCode::TtsApiError,
                ..assets.clone()
            })),
            images: Arc::new(MockImages(assets.clone())),
            avatar: Arc::new(MockAvatar(Mock {
                code: ErrorCode::DidApiError,
                ..assets
            })),
            renderer: Arc::new(MockRenderer(mock(Stage::Rendering, ErrorCode::RenderError))),
            thumbnail: Arc::new(MockThumbnail(mock(
                Stage::ThumbnailGenerating,
                ErrorCode::StabilityAiError,
            ))),
            uploader: Arc::new(MockUploader(mock(
                Stage::Uploading,
                ErrorCode::YoutubeApiError,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn mocks_wait_and_fail_as_told() {
        let failures = BTreeMap::from([(Stage::AssetsGenerating, 2)]);
        let log = std::env::temp_dir().join(format!("mock-calls-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let p = Providers::mock(
            Duration::from_millis(100),
            &failures,
            Locale::ZhTw,
            Some(CallLog::new(&log)),
        );
        let start = tokio::time::Instant::now();
        let script = p.script.write_script("AI").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(script.paragraphs.len(), 15);
        // The voice uses the first failure of the stage, the image the second.
        let voice_err = p.voice.synthesize(&script).await.unwrap_err();
        assert_eq!(voice_err.code, ErrorCode::TtsApiError);
        assert!(voice_err.retryable);
        let image_err = p
            .images
            .generate_image(&script.paragraphs[0], 1)
            .await
            .unwrap_err();
        assert_eq!(image_err.code, ErrorCode::StabilityAiError);
        assert!(
            p.images
                .generate_image(&script.paragraphs[0], 1)
                .await
                .is_ok()
        );
        let url = p.uploader.upload("t").await.unwrap();
        assert!(url.starts_with("https://youtube.com/watch?v="));
        assert_eq!(
            p.renderer.render_part(1, 4).await.unwrap().name,
            "part-1.mp4"
        );
        assert!(p.thumbnail.generate_thumbnail(&script).await.is_ok());
        assert!(
            p.avatar
                .generate_avatar(&Asset { name: "v".into() })
                .await
                .is_ok()
        );
        // Every call is logged when it starts, failed ones too.
        let logged = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!(
            logged.lines().collect::<Vec<_>>(),
            [
                "SCRIPT_GENERATING script",
                "ASSETS_GENERATING voice",
                "ASSETS_GENERATING image-01",
                "ASSETS_GENERATING image-01",
                "UPLOADING upload",
                "RENDERING part-1",
                "THUMBNAIL_GENERATING thumbnail",
                "ASSETS_GENERATING avatar",
            ]
        );
    }
}
