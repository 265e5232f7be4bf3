"""OTP application, tokens, activation, verification; mail notification passwords."""
