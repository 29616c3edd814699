"""reconcile: a reviewed, approved, archived and reversible plan between an
e-mail auto-responder pipeline's decisions and Salesforce Contact/Lead writes."""

__version__ = "0.1.0"
