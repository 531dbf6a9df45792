//! The Microsoft Teams message of a notice (pure): what a Teams Workflows webhook ("When a
//! Teams webhook request is received" → "Post card in a chat or channel") takes, one
//! Adaptive Card with the title, what happened, the facts and a link to the report.

use super::{Notice, ReportLink, event_word};
use crate::api::guard::NotifyEvent;
use serde_json::{Value, json};

/// The Adaptive Card version the card is written for: Teams renders 1.5 on every client
/// (desktop, web, mobile) since 2023; nothing in the card needs more than 1.2.
pub const CARD_VERSION: &str = "1.5";
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// The webhook body: a `message` whose one attachment is the card.
pub fn message(notice: &Notice, link: Option<&ReportLink>) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": card(notice, link),
        }],
    })
}

/// The Adaptive Card itself.
pub fn card(notice: &Notice, link: Option<&ReportLink>) -> Value {
    let mut facts: Vec<Value> = super::facts(notice)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    if let Some(command) = notice.report_command() {
        facts.push(json!({"title": "Report", "value": command}));
    }
    let body = vec![
        json!({
            "type": "TextBlock",
            "text": super::title(notice),
            "style": "heading",
            "size": "Medium",
            "weight": "Bolder",
            "color": color(notice.event),
            "wrap": true,
        }),
        json!({"type": "TextBlock", "text": notice.message, "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
        json!({
            "type": "TextBlock",
            "text": format!("rollguard · {} · {} · delivery {}", event_word(notice.event), notice.time, notice.id),
            "isSubtle": true,
            "size": "Small",
            "wrap": true,
        }),
    ];
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "fallbackText": format!("{}: {}", super::title(notice), notice.message),
        "body": body,
    });
    if let Some(link) = link {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": link.text, "url": link.url}]);
    }
    card
}

/// The title's colour: bad news in red, good news in green.
fn color(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Failed | NotifyEvent::Unhealthy | NotifyEvent::Drift => "Attention",
        NotifyEvent::Started | NotifyEvent::TriggerFiring => "Warning",
        NotifyEvent::Completed | NotifyEvent::Stable => "Good",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::SloOutcome;
    use crate::notify::request_notice;
    use crate::notify::tests::{at, request};

    #[test]
    fn the_message_is_one_adaptive_card_with_the_facts() {
        let mut r = request();
        r.status.as_mut().unwrap().slo = Some(SloOutcome {
            met: false,
            missed: vec!["total".into()],
        });
        let message = message(&request_notice(&r, NotifyEvent::Completed, at()), None);
        assert_eq!(message["type"], "message");
        let attachments = message["attachments"].as_array().unwrap();
        assert_eq!(attachments.len(), 1);
        assert_eq!(
            attachments[0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachments[0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.5");
        assert_eq!(card["body"][0]["text"], "Rollback completed: shop/phase4");
        assert_eq!(card["body"][0]["color"], "Good");
        let facts: Vec<(String, String)> = card["body"][2]["facts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["title"].as_str().unwrap().into(),
                    f["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        for (title, value) in [
            ("Guard", "shop/phase4"),
            ("Request", "incident-42"),
            ("Reason", "Critical issue detected in Phase 4 features"),
            (
                "Flags changed",
                "completion_validation_system: true → false",
            ),
            (
                "Durations",
                "flags off 0.041s, notified 0.120s, healthy 38.200s, total 38.900s",
            ),
            ("SLO", "missed: total"),
            ("Report", "kubectl rollguard report incident-42 -n shop"),
        ] {
            assert!(
                facts.contains(&(title.to_string(), value.to_string())),
                "{title}: {value} not in {facts:#?}"
            );
        }
        assert!(card.get("actions").is_none(), "no link, no action");
    }

    #[test]
    fn a_report_link_becomes_the_cards_action() {
        let notice = request_notice(&request(), NotifyEvent::Unhealthy, at());
        let link =
            crate::notify::report_link("https://reports.example/{namespace}/{request}", &notice)
                .unwrap();
        let card = card(&notice, link.as_ref());
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(
            card["actions"],
            json!([{"type": "Action.OpenUrl", "title": "Report of incident-42", "url": "https://reports.example/shop/incident-42"}])
        );
    }
}
