//! The `labelSelector` and `fieldSelector` query parameters of `list` and `watch`, parsed into
//! kube's [`Selector`] (label selectors) and a small set of supported fields. kube can render a
//! selector but not parse one, so the grammar of `k8s.io/apimachinery/pkg/labels` lives here:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k`, joined by commas.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector, SelectorExt};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "labelSelector: cannot parse {0:?}; use key=value, key!=value, key in (a,b), key notin (a,b), key or !key, joined by commas"
    )]
    Label(String),
    #[error(
        "fieldSelector: {0:?} is not supported; only metadata.name and metadata.namespace with = or != are"
    )]
    Field(String),
}

/// A parsed `fieldSelector`: only `metadata.name` and `metadata.namespace` are meaningful
/// for report objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(Field, bool, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError::Field(term.to_owned()));
            };
            let field = match key.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                _ => return Err(SelectorError::Field(term.to_owned())),
            };
            terms.push((field, equal, value.trim().to_owned()));
        }
        Ok(Self { terms })
    }

    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let actual = match field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (actual == value) == *equal
        })
    }

    /// The single name an equality term selects, if any (lets `get -w NAME` skip the rest).
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, equal, _)| *f == Field::Name && *equal)
            .map(|(_, _, v)| v.as_str())
    }
}

/// Parses a label selector in the Kubernetes text form.
pub fn parse_labels(text: &str) -> Result<Selector, SelectorError> {
    let bad = || SelectorError::Label(text.to_owned());
    let mut selector = Selector::default();
    for term in split_terms(text).ok_or_else(bad)? {
        selector.extend(parse_term(&term).ok_or_else(bad)?);
    }
    Ok(selector)
}

pub fn matches(selector: &Selector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    selector.matches(labels)
}

/// Splits at commas outside parentheses; `None` when the parentheses do not balance.
fn split_terms(text: &str) -> Option<Vec<String>> {
    let mut terms = Vec::new();
    let mut depth = 0u8;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => {
                depth = depth.checked_add(1)?;
                current.push(c);
            }
            ')' => {
                depth = depth.checked_sub(1)?;
                current.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if depth != 0 {
        return None;
    }
    terms.push(current);
    Some(
        terms
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

fn parse_term(term: &str) -> Option<Expression> {
    if let Some((key, value)) = term.split_once("!=") {
        return Some(Expression::NotEqual(key_of(key)?, value_of(value)?));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some(Expression::Equal(key_of(key)?, value_of(value)?));
    }
    if let Some(key) = term.strip_prefix('!') {
        return Some(Expression::DoesNotExist(key_of(key)?));
    }
    for (word, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = term.split_once(word) {
            let set = set.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values = set
                .split(',')
                .map(value_of)
                .collect::<Option<BTreeSet<String>>>()?;
            let key = key_of(key)?;
            return Some(if negate {
                Expression::NotIn(key, values)
            } else {
                Expression::In(key, values)
            });
        }
    }
    Some(Expression::Exists(key_of(term)?))
}

fn key_of(text: &str) -> Option<String> {
    let key = text.trim();
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_owned())
}

fn value_of(text: &str) -> Option<String> {
    let value = text.trim();
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equality_and_set_terms_select_like_kubernetes() {
        let l = labels(&[("scanreport.io/scanrequest", "web"), ("tier", "front")]);
        for (text, expected) in [
            ("", true),
            ("scanreport.io/scanrequest=web", true),
            ("scanreport.io/scanrequest==web", true),
            ("scanreport.io/scanrequest!=web", false),
            ("scanreport.io/scanrequest in (api, web)", true),
            ("scanreport.io/scanrequest notin (api,web)", false),
            ("tier,scanreport.io/scanrequest=web", true),
            ("!tier", false),
            ("missing", false),
            ("!missing", true),
            ("tier=front,scanreport.io/scanrequest=api", false),
        ] {
            let selector = parse_labels(text).unwrap();
            assert_eq!(matches(&selector, &l), expected, "{text}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_refused_with_the_parameter_named() {
        for text in ["a in (b", "a in b)", "=x", "a=b c", "a=(", "a in (b,c"] {
            let e = parse_labels(text).unwrap_err();
            assert!(e.to_string().starts_with("labelSelector"), "{text}: {e}");
        }
    }

    #[test]
    fn field_selectors_support_name_and_namespace_only() {
        let f = FieldSelector::parse("metadata.name=web-vuln,metadata.namespace!=other").unwrap();
        assert!(f.matches("team-a", "web-vuln"));
        assert!(!f.matches("other", "web-vuln"));
        assert!(!f.matches("team-a", "api-vuln"));
        assert_eq!(f.name(), Some("web-vuln"));
        assert!(FieldSelector::parse("").unwrap().matches("a", "b"));
        let e = FieldSelector::parse("spec.digest=x").unwrap_err();
        assert!(e.to_string().contains("metadata.name"), "{e}");
    }
}
