//! Keeping credentials out of what adapters echo: error messages scrubbed of every known
//! secret, and URLs without their user information.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::auth::RegistryAuthorization;
use super::wire;

/// Longest adapter message kept in an error.
pub(super) const MAX_MESSAGE_CHARS: usize = 512;

/// The message of an `ErrorResponse`, or the body's text; cleaned, shortened and with every
/// known secret replaced by `***`, since adapters sometimes echo what they were sent.
pub(super) fn error_message(body: &[u8], secrets: &[String]) -> String {
    let text = serde_json::from_slice::<wire::ErrorResponse>(body)
        .ok()
        .map(|e| e.error.message)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // Longest first, so `user:password` goes whole before `password` alone.
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        text = text.replace(secret.as_str(), "***");
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        text = text.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    text
}

/// What a registry authorization could show up as in an echo: the header value, its token and,
/// for Basic, the decoded `user:password` and password.
pub(super) fn registry_secrets(auth: &RegistryAuthorization) -> Vec<String> {
    let value = auth.as_secret().expose();
    let mut out = vec![value.to_owned()];
    if let Some((scheme, token)) = value.split_once(' ') {
        out.push(token.to_owned());
        if scheme.eq_ignore_ascii_case("basic")
            && let Some(decoded) = STANDARD
                .decode(token)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
        {
            if let Some((_, password)) = decoded.split_once(':') {
                out.push(password.to_owned());
            }
            out.push(decoded);
        }
    }
    out
}

/// Replaces `user:password@` in a URL-like string with `***@`.
pub(super) fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let sep = if scheme.is_empty() { "" } else { "://" };
            format!("{scheme}{sep}***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}
