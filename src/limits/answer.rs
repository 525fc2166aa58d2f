//! The `429` llmtap answers for a limit, in the provider's own error shape, so that the
//! official SDKs surface it as their rate-limit error.

use crate::providers::ApiShape;
/// Which error shape a provider's SDK reads (each API's provider file says which).
pub use crate::providers::ErrorShape;

impl ErrorShape {
    /// By the API the request spoke, else by the provider's name.
    pub fn of(provider: Option<&str>, shape: ApiShape) -> ErrorShape {
        if let Some(shape) = shape.error_shape() {
            return shape;
        }
        match provider {
            Some(p) if p.starts_with("gcp.") => ErrorShape::Gemini,
            Some(p) => ErrorShape::of_provider_name(p).unwrap_or(ErrorShape::OpenAi),
            None => ErrorShape::OpenAi,
        }
    }
}

/// The JSON body of a limit refusal.
pub fn rate_limit_body(shape: ErrorShape, message: &str) -> String {
    let doc = match shape {
        ErrorShape::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": "rate_limit_error", "message": message},
        }),
        ErrorShape::OpenAi => serde_json::json!({
            "error": {
                "message": message,
                "type": "rate_limit_exceeded",
                "code": "rate_limit_exceeded",
            },
        }),
        ErrorShape::Gemini => serde_json::json!({
            "error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"},
        }),
        // AWS SDKs take the error code from `__type` when no `x-amzn-ErrorType` header says it.
        ErrorShape::Bedrock => serde_json::json!({
            "__type": "ThrottlingException",
            "message": message,
        }),
    };
    doc.to_string()
}

/// The JSON body when the limits store is unavailable and `--limits-store-fail closed`.
pub fn unavailable_body(shape: ErrorShape, message: &str) -> String {
    let doc = match shape {
        ErrorShape::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": "overloaded_error", "message": message},
        }),
        ErrorShape::OpenAi => serde_json::json!({
            "error": {"message": message, "type": "server_error", "code": "limits_store_unavailable"},
        }),
        ErrorShape::Gemini => serde_json::json!({
            "error": {"code": 503, "message": message, "status": "UNAVAILABLE"},
        }),
        ErrorShape::Bedrock => serde_json::json!({
            "__type": "ServiceUnavailableException",
            "message": message,
        }),
    };
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_gets_its_own_shape() {
        let anthropic: serde_json::Value =
            serde_json::from_str(&rate_limit_body(ErrorShape::Anthropic, "m \"q\"")).unwrap();
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "rate_limit_error");
        assert_eq!(anthropic["error"]["message"], "m \"q\"");
        let openai: serde_json::Value =
            serde_json::from_str(&rate_limit_body(ErrorShape::OpenAi, "m")).unwrap();
        assert_eq!(openai["error"]["code"], "rate_limit_exceeded");
        assert_eq!(openai["error"]["type"], "rate_limit_exceeded");
        let gemini: serde_json::Value =
            serde_json::from_str(&rate_limit_body(ErrorShape::Gemini, "m")).unwrap();
        assert_eq!(gemini["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(
            ErrorShape::of(Some("anthropic"), ApiShape::Unknown),
            ErrorShape::Anthropic
        );
        assert_eq!(
            ErrorShape::of(Some("gcp.vertex_ai"), ApiShape::Unknown),
            ErrorShape::Gemini
        );
        assert_eq!(
            ErrorShape::of(Some("anthropic"), ApiShape::OpenAiChat),
            ErrorShape::OpenAi
        );
        assert_eq!(
            ErrorShape::of(Some("aws.bedrock"), ApiShape::Unknown),
            ErrorShape::Bedrock
        );
        assert_eq!(
            ErrorShape::of(Some("azure.ai.openai"), ApiShape::Unknown),
            ErrorShape::OpenAi
        );
        assert_eq!(ErrorShape::of(None, ApiShape::Unknown), ErrorShape::OpenAi);
        let bedrock: serde_json::Value =
            serde_json::from_str(&rate_limit_body(ErrorShape::Bedrock, "m")).unwrap();
        assert_eq!(bedrock["__type"], "ThrottlingException");
        assert_eq!(bedrock["message"], "m");
        let bedrock: serde_json::Value =
            serde_json::from_str(&unavailable_body(ErrorShape::Bedrock, "m")).unwrap();
        assert_eq!(bedrock["__type"], "ServiceUnavailableException");
    }
}
