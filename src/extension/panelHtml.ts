/**
 * The panel's HTML: one script and one stylesheet from dist/, a Content-Security-Policy that allows
 * only them (the script by nonce), images from the webview's resource roots or data URIs, and nothing
 * inline. Kept free of the vscode module so it can be tested on its own.
 */
export function panelHtml(cspSource: string, scriptUri: string, styleUri: string, nonce: string): string {
  const csp = ["default-src 'none'", `img-src ${cspSource} data:`, `style-src ${cspSource}`, `font-src ${cspSource}`, `script-src 'nonce-${nonce}'`].join("; ");
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${styleUri}">
<title>Null-text Inversion</title></head>
<body><main id="app"></main><script type="module" nonce="${nonce}" src="${scriptUri}"></script></body></html>`;
}
