"""One router per caller: Stripe (`stripe_webhook`), Twilio (`sms_webhook`), the SaaS app
(`in_app`), operators (`codec_server`, `health`). Their dependencies are in `starter.api.deps`."""
