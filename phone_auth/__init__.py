"""Inbound-call phone verification and the telephony edges."""
