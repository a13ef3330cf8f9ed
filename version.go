// The product's version, which every part reports: --version, the daemon's
// /v1/version and the broker's /health.
package main

// version is the product version.
const version = "0.1.0"
