//! Redaction of credentials in text that leaves the process: status messages, Events, logs.
//!
//! Text from outside (an adapter's or a registry's error body) may echo the credentials the
//! operator sent. [`Redactor::scrub`] replaces every known secret in every form it may take on
//! the wire: as is, JSON-escaped, percent-encoded, base64 (alone and as `user:password`, the
//! `Basic` form), with its whitespace collapsed. It also blanks any `Basic`/`Bearer` credential
//! and the user-info of any URL, known or not. Matching runs on the text exactly as received:
//! whitespace is normalised only afterwards ([`Redactor::one_line`]), so a password with two
//! spaces in a row is found.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What replaces a credential.
pub const MARK: &str = "***";

/// Scrubs a fixed set of secrets (and credential-shaped text) from any text.
#[derive(Default, Clone)]
pub struct Redactor {
    /// Every form of every secret, longest first so that a longer form is replaced whole.
    needles: Vec<String>,
    /// Secrets with whitespace, matching any whitespace run in its place (`pa  ss` also as
    /// `pa\nss`): a peer may re-wrap or collapse what it echoes.
    flexible: Vec<regex::Regex>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor for `secrets` (passwords, usernames, tokens). `pairs` are `(username,
    /// password)` pairs whose Basic form (`base64(user:password)`) must be scrubbed too.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a str>,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut needles = Vec::new();
        let mut flexible = Vec::new();
        for secret in secrets {
            forms_of(secret, &mut needles);
            let words: Vec<&str> = secret.split_whitespace().collect();
            if words.len() > 1 || (words.len() == 1 && words[0] != secret) {
                let pattern = words
                    .iter()
                    .map(|w| regex::escape(w))
                    .collect::<Vec<_>>()
                    .join(r"\s+");
                // A secret too large for a regex is still matched exactly.
                if let Ok(re) = regex::Regex::new(&pattern) {
                    flexible.push(re);
                }
            }
        }
        for (user, password) in pairs {
            let pair = format!("{user}:{password}");
            for encoded in base64_forms(pair.as_bytes()) {
                needles.push(encoded);
            }
        }
        // A form inside the mark would be "found" again in every replacement.
        needles.retain(|n| !n.is_empty() && !MARK.contains(n.as_str()));
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles, flexible }
    }

    /// A redactor for the secrets of registry `credentials`.
    pub fn for_credentials(credentials: &crate::registry::RegistryCredentials) -> Self {
        use secrecy::ExposeSecret;
        let pair = match credentials {
            crate::registry::RegistryCredentials::Basic { username, password } => {
                Some((username.expose_secret(), password.expose_secret()))
            }
            _ => None,
        };
        Self::new(credentials.secrets(), pair)
    }

    /// A redactor for the secrets of both `self` and `other`.
    pub fn and(&self, other: &Redactor) -> Self {
        let mut needles = self.needles.clone();
        needles.extend(other.needles.iter().cloned());
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        let mut flexible = self.flexible.clone();
        flexible.extend(other.flexible.iter().cloned());
        Self { needles, flexible }
    }

    /// `text` with every secret, `Basic`/`Bearer` credential and URL user-info replaced by
    /// [`MARK`]. Whitespace is left as it is.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = scrub_auth_schemes(&scrub_url_userinfo(text));
        for re in &self.flexible {
            if re.is_match(&out) {
                out = re.replace_all(&out, MARK).into_owned();
            }
        }
        // Replacing one secret can join the text around it into another secret; a few rounds
        // reach the fixed point, since each round only shortens or keeps the text's secrets.
        for _ in 0..4 {
            let mut changed = false;
            for needle in &self.needles {
                if out.contains(needle.as_str()) {
                    out = out.replace(needle.as_str(), MARK);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        out
    }

    /// [`Self::scrub`], then whitespace collapsed to single spaces and the result cut to at
    /// most `max_chars` characters: for status messages and Event notes.
    pub fn one_line(&self, text: &str, max_chars: usize) -> String {
        let scrubbed = self.scrub(text);
        let collapsed = scrubbed.split_whitespace().collect::<Vec<_>>().join(" ");
        match collapsed.char_indices().nth(max_chars) {
            Some((cut, _)) => format!("{}…", &collapsed[..cut]),
            None => collapsed,
        }
    }
}

/// The forms in which `secret` may appear in text.
fn forms_of(secret: &str, out: &mut Vec<String>) {
    if secret.is_empty() {
        return;
    }
    out.push(secret.to_owned());
    // JSON string escaping (an adapter that echoes its request body).
    if let Ok(json) = serde_json::to_string(secret) {
        out.push(json[1..json.len().saturating_sub(1)].to_owned());
    }
    // A peer that normalised the whitespace before echoing.
    let collapsed = secret.split_whitespace().collect::<Vec<_>>().join(" ");
    if !collapsed.is_empty() {
        out.push(collapsed);
    }
    // Percent-encoded, as in URL user-info or a query.
    out.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
    out.push(
        secret
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
    );
    out.extend(base64_forms(secret.as_bytes()));
}

fn base64_forms(bytes: &[u8]) -> Vec<String> {
    vec![
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
    ]
}

/// Blanks the credential after `Basic` or `Bearer` (any case), whatever it is.
fn scrub_auth_schemes(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while pos < text.len() {
        let next = ["basic", "bearer"]
            .iter()
            .filter_map(|scheme| lower[pos..].find(scheme).map(|i| (pos + i, scheme.len())))
            .min();
        let Some((start, len)) = next else { break };
        let after = start + len;
        // A scheme word: not the end of a longer word, followed by whitespace.
        let boundary_before = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let ws = text[after..]
            .char_indices()
            .take_while(|(_, c)| *c == ' ' || *c == '\t')
            .last()
            .map(|(i, c)| i + c.len_utf8());
        match ws {
            Some(ws_len) if boundary_before => {
                let cred_start = after + ws_len;
                let cred_len = text[cred_start..]
                    .find(|c: char| {
                        c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '}' | ']' | ')')
                    })
                    .unwrap_or(text.len() - cred_start);
                out.push_str(&text[pos..cred_start]);
                if cred_len > 0 {
                    out.push_str(MARK);
                }
                pos = cred_start + cred_len;
            }
            _ => {
                out.push_str(&text[pos..after]);
                pos = after;
            }
        }
    }
    out.push_str(&text[pos..]);
    out
}

/// Replaces the user-info of every URL in `text` (`scheme://user:password@host`) with
/// [`MARK`]; URLs are recognised with `url::Url`. The one URL-redaction helper of the crate.
pub fn scrub_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = text[pos..].find("://") {
        let sep = pos + found;
        let authority_start = sep + 3;
        let end = text[authority_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(text.len(), |i| authority_start + i);
        // The authority ends at the first `/`, `?` or `#`; its user-info at its last `@`.
        let authority_end = text[authority_start..end]
            .find(['/', '?', '#'])
            .map_or(end, |i| authority_start + i);
        let at = text[authority_start..authority_end].rfind('@');
        let scheme_start = text[..sep]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(sep, |(i, _)| i);
        match at {
            Some(at) if scheme_start < sep => {
                let candidate = &text[scheme_start..end];
                let parsed = url::Url::parse(candidate).ok();
                let has_userinfo = parsed
                    .as_ref()
                    .is_some_and(|u| !u.username().is_empty() || u.password().is_some());
                // Text that url::Url rejects still gets its user-info blanked: better safe.
                if has_userinfo || parsed.is_none() {
                    out.push_str(&text[pos..authority_start]);
                    out.push_str(MARK);
                    pos = authority_start + at;
                    continue;
                }
                out.push_str(&text[pos..authority_start]);
                pos = authority_start;
            }
            _ => {
                out.push_str(&text[pos..authority_start]);
                pos = authority_start;
            }
        }
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redactor(user: &str, password: &str) -> Redactor {
        Redactor::new([user, password], [(user, password)])
    }

    #[test]
    fn two_redactors_together_scrub_the_secrets_of_both() {
        let a = redactor("robot-a", "pa  ss");
        let b = redactor("robot-b", "secret-b");
        let both = a.and(&b);
        assert_eq!(
            both.scrub("robot-a pa  ss robot-b secret-b"),
            "*** *** *** ***"
        );
        assert_eq!(a.scrub("robot-b secret-b"), "robot-b secret-b");
    }

    #[test]
    fn a_password_with_two_spaces_in_a_row_is_scrubbed_before_whitespace_is_collapsed() {
        let r = redactor("robot", "pa  ss");
        let text = "error: login robot with pa  ss failed";
        let line = r.one_line(text, 200);
        assert!(
            !line.contains("pa  ss") && !line.contains("pa ss"),
            "{line}"
        );
        assert!(!line.contains("robot"), "{line}");
        // Also when the peer collapsed or re-wrapped it before echoing.
        assert!(!r.scrub("got pa ss").contains("pa ss"));
        assert_eq!(r.scrub("got pa\n\tss!"), "got ***!");
    }

    #[test]
    fn a_redactor_for_registry_credentials_scrubs_user_password_and_basic_form() {
        let creds = crate::registry::RegistryCredentials::Basic {
            username: "robot$team".into(),
            password: "pw with  spaces".into(),
        };
        let r = Redactor::for_credentials(&creds);
        let basic = STANDARD.encode("robot$team:pw with  spaces");
        let out = r.scrub(&format!("user robot$team pw with  spaces auth {basic}"));
        assert_eq!(out, "user *** *** auth ***");
    }

    #[test]
    fn basic_and_bearer_credentials_are_scrubbed_known_or_not() {
        let r = redactor("robot", "s3cret");
        let basic = STANDARD.encode("robot:s3cret");
        let text =
            format!("sent Authorization: Basic {basic}, and bearer abc.def.ghi; then {basic}");
        let out = r.scrub(&text);
        assert!(!out.contains(&basic), "{out}");
        assert!(!out.contains("abc.def.ghi"), "{out}");
        assert!(
            out.contains("Basic ***") && out.contains("bearer ***"),
            "{out}"
        );
        // Words that merely contain the scheme names are left alone.
        assert_eq!(
            r.scrub("a basically bearerless text"),
            "a basically bearerless text"
        );
    }

    #[test]
    fn url_userinfo_is_scrubbed_with_the_host_kept() {
        let r = Redactor::default();
        let out = r.scrub("pull https://alice:pw%20x@reg.example:5000/v2/team failed");
        assert_eq!(out, "pull https://***@reg.example:5000/v2/team failed");
        let out = r.scrub("postgres://app:p@ss@db.internal/ops and http://plain.example/x@y");
        assert!(!out.contains("app:p") && !out.contains("ss@db"), "{out}");
        assert!(out.contains("http://plain.example/x@y"), "{out}");
    }

    #[test]
    fn json_escaped_and_percent_encoded_echoes_are_scrubbed() {
        let r = redactor("robot", "q\"u/o te");
        let out = r.scrub(
            r#"{"password":"q\"u/o te","url":"https://x/?p=q%22u%2Fo+te&u=q%22u%2Fo%20te"}"#,
        );
        assert!(!out.contains("u/o") && !out.contains("u%2Fo"), "{out}");
    }

    #[test]
    fn one_line_cuts_on_a_character_boundary() {
        let r = Redactor::default();
        assert_eq!(r.one_line("é é é", 3), "é é…");
        assert_eq!(r.one_line("  a \n b  ", 10), "a b");
    }

    fn secret() -> impl Strategy<Value = String> {
        // Any printable text without the mark's character, spaces included.
        proptest::string::string_regex("[^*\\x00-\\x1f]{1,24}").unwrap()
    }

    fn noise() -> impl Strategy<Value = String> {
        proptest::string::string_regex("(?s).{0,40}").unwrap()
    }

    proptest! {
        #[test]
        fn a_secret_embedded_in_any_text_never_survives(
            user in secret(), password in secret(), before in noise(), middle in noise(),
            after in noise(), form in 0usize..4,
        ) {
            let r = redactor(&user, &password);
            let embedded = match form {
                0 => password.clone(),
                1 => STANDARD.encode(&password),
                2 => format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
                _ => serde_json::to_string(&password).unwrap(),
            };
            let text = format!("{before}{embedded}{middle}{user}{after}");
            let out = r.scrub(&text);
            prop_assert!(!out.contains(&password), "password in {:?}", out);
            prop_assert!(!out.contains(&embedded), "form {} in {:?}", form, out);
            let line = r.one_line(&text, 10_000);
            let collapsed: String = password.split_whitespace().collect::<Vec<_>>().join(" ");
            prop_assert!(collapsed.is_empty() || !line.contains(&collapsed), "{:?}", line);
        }

        #[test]
        fn scrubbing_never_panics_and_keeps_text_without_secrets(text in noise()) {
            let r = redactor("alice-robot-xyz", "correct horse battery");
            let out = r.scrub(&text);
            if !text.contains("://") && !text.to_ascii_lowercase().contains("basic")
                && !text.to_ascii_lowercase().contains("bearer") && !text.contains("alice")
                && !text.contains("correct") {
                prop_assert_eq!(out, text);
            }
        }
    }
}
