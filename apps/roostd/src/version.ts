// The version reported by /healthz, `roostd --version` and the OpenAPI document.
export const version = '0.1.0';
