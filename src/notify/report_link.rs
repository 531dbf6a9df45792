//! The link to a request's report that PagerDuty alerts and Teams cards carry (pure): an
//! optional `reportUrl` in the receiver's Secret, a URL template such as
//! `https://grafana.example/d/rollguard?var-namespace={namespace}&var-request={request}`.

use super::Notice;

/// A link as the receivers show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportLink {
    pub url: String,
    pub text: String,
}

/// The placeholders a `reportUrl` may hold.
pub const PLACEHOLDERS: [&str; 3] = ["{namespace}", "{guard}", "{request}"];

/// `template` filled in for `notice`; None when the notice names no request (a trigger
/// firing, a drift). An error names the problem, never the template (it came from a Secret).
pub fn report_link(template: &str, notice: &Notice) -> Result<Option<ReportLink>, String> {
    let Some(request) = notice.request_name() else {
        return Ok(None);
    };
    // Names are DNS-1123 (lower-case letters, digits, '-' and '.'): nothing to escape.
    let url = template
        .replace("{namespace}", &notice.namespace)
        .replace("{guard}", &notice.guard)
        .replace("{request}", request);
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(Some(ReportLink {
            url: parsed.to_string(),
            text: format!("Report of {request}"),
        })),
        Ok(parsed) => Err(format!(
            "key \"reportUrl\" is a {}: URL, not http(s)",
            parsed.scheme()
        )),
        Err(e) => Err(format!("key \"reportUrl\" is not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::guard::NotifyEvent;
    use crate::notify::request_notice;
    use crate::notify::tests::{at, request};

    #[test]
    fn a_report_url_is_filled_in_and_must_be_http() {
        let notice = request_notice(&request(), NotifyEvent::Started, at());
        let link = report_link("https://r.example/{guard}?request={request}", &notice).unwrap();
        assert_eq!(
            link.unwrap().url,
            "https://r.example/phase4?request=incident-42"
        );
        let secret = "javascript:alert(1)//secret-part";
        let err = report_link(secret, &notice).unwrap_err();
        assert!(
            err.contains("reportUrl") && !err.contains("secret-part"),
            "{err}"
        );
        let err = report_link("not a url {request}", &notice).unwrap_err();
        assert!(
            err.contains("not a URL") && !err.contains("incident-42"),
            "{err}"
        );
        let mut drift = notice.clone();
        drift.request = None;
        assert_eq!(report_link("https://r.example/", &drift), Ok(None));
    }
}
