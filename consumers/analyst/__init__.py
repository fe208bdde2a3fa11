"""The analyst consumer: SpecRequested -> SpecReady | ClarificationAsked | SpecFailed."""
