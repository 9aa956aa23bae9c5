"""Delivery of messages: the notification library's one owner (docs/notifications.md).

`message` words events for people, `delivery` hands one message to one URL of the library
(apprise: Slack, Teams workflows, Discord, e-mail over SMTP, ntfy, JSON webhooks, ...), and
`courier` delivers off the caller's thread with a timeout and bounded retries, reporting every
attempt. *When* to notify *whom* is the daemon's (`daemon.alerts`).
"""
