//! The error-code catalog: every code a job can report, whether retrying can help, and
//! what a person can do about it. One table, so front ends, workers and the hub agree.

use serde::{Deserialize, Serialize};

use crate::locale::Locale;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    GeminiApiError,
    GeminiQuotaExceeded,
    StabilityAiError,
    StabilityAiQuotaExceeded,
    DidApiError,
    TtsApiError,
    YoutubeApiError,
    YoutubeQuotaExceeded,
    YoutubeAuthExpired,
    RenderError,
    StorageError,
    NetworkTimeout,
    InvalidInput,
    /// A `generate` refused: as many jobs wait as the queue holds (HTTP 503).
    JobQueueFull,
    /// A `generate` refused: the client has as many unfinished jobs as it may (HTTP 429).
    TooManyQueuedJobs,
    /// A publish refused: it would create a project, and the client has created as many
    /// as it may (at once, or in the last minute) (HTTP 429).
    TooManyNewProjects,
    InternalError,
}

/// One row of the catalog.
pub struct Entry {
    pub code: ErrorCode,
    pub retryable: bool,
    message: (&'static str, &'static str),
    solutions: (&'static [&'static str], &'static [&'static str]),
}

impl Entry {
    /// The default human message for this code.
    pub fn message(&self, locale: Locale) -> &'static str {
        locale.pick(self.message.0, self.message.1)
    }

    pub fn solutions(&self, locale: Locale) -> Vec<String> {
        let list = match locale {
            Locale::ZhTw => self.solutions.0,
            Locale::En => self.solutions.1,
        };
        list.iter().map(|s| s.to_string()).collect()
    }
}

const CATALOG: &[Entry] = &[
    Entry {
        code: ErrorCode::GeminiApiError,
        retryable: true,
        message: ("Gemini API 呼叫失敗", "Gemini API call failed"),
        solutions: (
            &[
                "系統將自動重試",
                "若持續失敗，請稍後再試",
                "檢查 Gemini API 金鑰是否有效",
            ],
            &[
                "The system retries automatically",
                "If it keeps failing, try again later",
                "Check that the Gemini API key is valid",
            ],
        ),
    },
    Entry {
        code: ErrorCode::GeminiQuotaExceeded,
        retryable: false,
        message: ("Gemini API 配額已用盡", "Gemini API quota exceeded"),
        solutions: (
            &[
                "等待配額重置（通常為每日）",
                "在 Google Cloud Console 提高配額",
                "改用其他 API 金鑰",
            ],
            &[
                "Wait for the quota to reset (usually daily)",
                "Raise the quota in Google Cloud Console",
                "Use another API key",
            ],
        ),
    },
    Entry {
        code: ErrorCode::StabilityAiError,
        retryable: true,
        message: (
            "Stability AI 圖片生成失敗",
            "Stability AI image generation failed",
        ),
        solutions: (
            &[
                "系統將自動重試",
                "檢查 Stability AI 服務狀態",
                "調整段落內容後重新生成",
            ],
            &[
                "The system retries automatically",
                "Check the Stability AI service status",
                "Adjust the paragraph text and regenerate",
            ],
        ),
    },
    Entry {
        code: ErrorCode::StabilityAiQuotaExceeded,
        retryable: false,
        message: ("Stability AI 配額已用盡", "Stability AI credits exhausted"),
        solutions: (
            &["為 Stability AI 帳戶加值", "改用其他 API 金鑰"],
            &["Top up the Stability AI account", "Use another API key"],
        ),
    },
    Entry {
        code: ErrorCode::DidApiError,
        retryable: true,
        message: ("D-ID 虛擬主播生成失敗", "D-ID avatar generation failed"),
        solutions: (
            &[
                "系統將自動重試",
                "檢查 D-ID 帳戶額度",
                "可改為不使用虛擬主播",
            ],
            &[
                "The system retries automatically",
                "Check the D-ID account credits",
                "Generate without the avatar",
            ],
        ),
    },
    Entry {
        code: ErrorCode::TtsApiError,
        retryable: true,
        message: ("語音合成失敗", "Text-to-speech failed"),
        solutions: (
            &["系統將自動重試", "檢查語音服務設定"],
            &[
                "The system retries automatically",
                "Check the speech service settings",
            ],
        ),
    },
    Entry {
        code: ErrorCode::YoutubeApiError,
        retryable: true,
        message: ("YouTube 上傳失敗", "YouTube upload failed"),
        solutions: (
            &[
                "系統將自動重試",
                "檢查 YouTube 頻道狀態",
                "稍後從專案頁面重新上傳",
            ],
            &[
                "The system retries automatically",
                "Check the YouTube channel status",
                "Upload again later from the project page",
            ],
        ),
    },
    Entry {
        code: ErrorCode::YoutubeQuotaExceeded,
        retryable: false,
        message: (
            "YouTube API 每日配額已用盡",
            "YouTube API daily quota exceeded",
        ),
        solutions: (
            &[
                "等待明日配額重置後重新上傳",
                "申請提高 YouTube Data API 配額",
            ],
            &[
                "Upload again after the daily quota resets",
                "Request a higher YouTube Data API quota",
            ],
        ),
    },
    Entry {
        code: ErrorCode::YoutubeAuthExpired,
        retryable: false,
        message: ("YouTube 授權已過期", "YouTube authorization expired"),
        solutions: (
            &["在設定頁面重新連結 YouTube 帳號", "重新上傳影片"],
            &[
                "Reconnect the YouTube account in settings",
                "Upload the video again",
            ],
        ),
    },
    Entry {
        code: ErrorCode::RenderError,
        retryable: true,
        message: ("影片渲染失敗", "Video rendering failed"),
        solutions: (
            &["系統將自動重試", "檢查素材是否完整", "降低輸出解析度後重試"],
            &[
                "The system retries automatically",
                "Check that every asset is present",
                "Retry with a lower output resolution",
            ],
        ),
    },
    Entry {
        code: ErrorCode::StorageError,
        retryable: true,
        message: ("檔案儲存失敗", "Storing a file failed"),
        solutions: (
            &["系統將自動重試", "檢查磁碟空間"],
            &[
                "The system retries automatically",
                "Check the free disk space",
            ],
        ),
    },
    Entry {
        code: ErrorCode::NetworkTimeout,
        retryable: true,
        message: ("網路逾時", "Network timeout"),
        solutions: (
            &["系統將自動重試", "檢查網路連線"],
            &[
                "The system retries automatically",
                "Check the network connection",
            ],
        ),
    },
    Entry {
        code: ErrorCode::InvalidInput,
        retryable: false,
        message: ("輸入內容無效", "Invalid input"),
        solutions: (
            &["修改主題或設定後重新生成"],
            &["Change the topic or settings and generate again"],
        ),
    },
    Entry {
        code: ErrorCode::JobQueueFull,
        retryable: true,
        message: ("生成佇列已滿", "The generation queue is full"),
        solutions: (
            &["請依 Retry-After 稍候再試", "排隊中的工作完成後即有空位"],
            &[
                "Try again after the Retry-After time",
                "Places free up as queued jobs are taken",
            ],
        ),
    },
    Entry {
        code: ErrorCode::TooManyQueuedJobs,
        retryable: true,
        message: (
            "未完成的生成工作已達上限",
            "Too many unfinished generation jobs from this client",
        ),
        solutions: (
            &["等待先前的工作完成後再試", "請依 Retry-After 稍候再試"],
            &[
                "Wait for earlier jobs to finish, then try again",
                "Try again after the Retry-After time",
            ],
        ),
    },
    Entry {
        code: ErrorCode::TooManyNewProjects,
        retryable: true,
        message: (
            "此用戶端新建的專案已達上限",
            "Too many new projects from this client",
        ),
        solutions: (
            &["請發佈到已建立的專案", "請依 Retry-After 稍候再試"],
            &[
                "Publish to the projects you already have",
                "Try again after the Retry-After time",
            ],
        ),
    },
    Entry {
        code: ErrorCode::InternalError,
        retryable: false,
        message: ("系統內部錯誤", "Internal error"),
        solutions: (
            &["請稍後再試", "若問題持續，請聯繫客服並提供 trace_id"],
            &[
                "Try again later",
                "If it persists, contact support with the trace_id",
            ],
        ),
    },
];

impl ErrorCode {
    pub fn entry(self) -> &'static Entry {
        // Every variant has a row (checked by a test), so the fallback is never taken.
        CATALOG
            .iter()
            .find(|e| e.code == self)
            .unwrap_or(&CATALOG[CATALOG.len() - 1])
    }

    pub fn is_retryable(self) -> bool {
        self.entry().retryable
    }

    pub fn all() -> impl Iterator<Item = ErrorCode> {
        CATALOG.iter().map(|e| e.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_row_with_solutions_in_both_languages() {
        let codes = [
            ErrorCode::GeminiApiError,
            ErrorCode::GeminiQuotaExceeded,
            ErrorCode::StabilityAiError,
            ErrorCode::StabilityAiQuotaExceeded,
            ErrorCode::DidApiError,
            ErrorCode::TtsApiError,
            ErrorCode::YoutubeApiError,
            ErrorCode::YoutubeQuotaExceeded,
            ErrorCode::YoutubeAuthExpired,
            ErrorCode::RenderError,
            ErrorCode::StorageError,
            ErrorCode::NetworkTimeout,
            ErrorCode::InvalidInput,
            ErrorCode::JobQueueFull,
            ErrorCode::TooManyQueuedJobs,
            ErrorCode::TooManyNewProjects,
            ErrorCode::InternalError,
        ];
        assert_eq!(ErrorCode::all().count(), codes.len());
        for code in codes {
            let rows = CATALOG.iter().filter(|e| e.code == code).count();
            assert_eq!(rows, 1, "{code:?}");
            let entry = code.entry();
            assert_eq!(entry.code, code);
            assert!(!entry.solutions(Locale::ZhTw).is_empty());
            assert_eq!(
                entry.solutions(Locale::ZhTw).len(),
                entry.solutions(Locale::En).len()
            );
            assert!(!entry.message(Locale::En).is_empty());
        }
        assert!(ErrorCode::GeminiApiError.is_retryable());
        assert!(!ErrorCode::GeminiQuotaExceeded.is_retryable());
    }

    #[test]
    fn codes_serialize_as_screaming_snake_case() {
        assert_eq!(
            serde_json::to_string(&ErrorCode::DidApiError).unwrap(),
            "\"DID_API_ERROR\""
        );
        assert_eq!(
            serde_json::to_string(&ErrorCode::YoutubeApiError).unwrap(),
            "\"YOUTUBE_API_ERROR\""
        );
        assert_eq!(
            serde_json::to_string(&ErrorCode::StabilityAiError).unwrap(),
            "\"STABILITY_AI_ERROR\""
        );
    }
}
