"""Notification addresses (registered + Select E-mail), mail rendering, SMTP delivery."""
