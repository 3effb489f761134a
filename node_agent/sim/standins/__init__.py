"""Stand-ins for the services a node talks to, as small real HTTP servers on
127.0.0.1: the Azure Instance Metadata Service and a Flamenco v3 Manager. Used by
the tests and by the local simulated node; never by a real node."""
