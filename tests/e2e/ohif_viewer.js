// Opens an OHIF viewer URL in Debian's headless Chromium and waits for one outcome:
//   render       a cornerstone viewport canvas shows an image (non-blank pixels);
//   unavailable  OHIF says the studies are not available.
// Usage: node ohif_viewer.js VIEWER_URL SCREENSHOT.png render|unavailable
// Prints one JSON line on stdout: elapsed_ms (navigation start -> outcome), the canvas statistics, the
// page text, every DICOMweb/WADO request the page made (status, Authorization sent or not) and the "strays"
// (viewer files that failed, same-origin requests outside /ohif/ and DICOMweb). Exit 1 on
// failure (the screenshot is taken either way).
const { chromium } = require('playwright-core');

const TIMEOUT_MS = 60000;

// In the page: the largest cornerstone canvas and the fraction of its pixels that are not near-black.
function canvasStats() {
  const canvases = [...document.querySelectorAll('canvas.cornerstone-canvas')]
    .filter((c) => c.width > 0 && c.height > 0)
    .sort((a, b) => b.width * b.height - a.width * a.height);
  if (canvases.length === 0) return { canvases: 0, nonblank: 0 };
  const canvas = canvases[0];
  const context = canvas.getContext('2d', { willReadFrequently: true });
  if (!context) return { canvases: canvases.length, nonblank: 0, note: 'no 2d context' };
  const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
  let lit = 0;
  const levels = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const value = Math.max(data[i], data[i + 1], data[i + 2]);
    if (value > 16) lit += 1;
    levels.add(value >> 3);
  }
  return { canvases: canvases.length, width: canvas.width, height: canvas.height,
           nonblank: lit / (data.length / 4), levels: levels.size };
}

(async () => {
  const [url, screenshot, mode] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--enable-unsafe-swiftshader'],
  });
  const requests = [];
  // Orthanc's DICOMweb and WADO-URI, and the plugin's scoped QIDO root the viewer queries.
  const isDicomweb = (path) => ['/dicom-web', '/ehr-imaging/dicom-web', '/wado'].some((p) => path.startsWith(p));
  const strays = [];  // the viewer's own files that failed, or same-origin requests outside /ohif/
  let outcome = { ok: false };
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('response', async (response) => {
      const request = response.request();
      const path = new URL(request.url()).pathname;
      const sameOrigin = new URL(request.url()).origin === new URL(url).origin;
      if (sameOrigin && !path.startsWith('/ohif/') && !isDicomweb(path)) {
        strays.push({ path, status: response.status() });  // a root path the sub-path rewrite missed
      } else if (response.status() >= 400 && path.startsWith('/ohif/')) {
        strays.push({ path, status: response.status() });
      }
      if (isDicomweb(path)) {
        const headers = await request.allHeaders();
        requests.push({ method: request.method(), path, query: new URL(request.url()).search,
                        status: response.status(), authorization: headers.authorization || null });
      }
    });
    const started = Date.now();
    await page.goto(url);
    if (mode === 'render') {
      await page.waitForFunction(
        `(${canvasStats.toString()})().nonblank > 0.01`, null, { timeout: TIMEOUT_MS, polling: 100 });
    } else if (mode === 'unavailable') {
      await page.waitForFunction(() => /not available/i.test(document.body.innerText), null,
                                 { timeout: TIMEOUT_MS, polling: 100 });
    } else {
      throw new Error(`unknown mode ${mode}`);
    }
    const elapsed = Date.now() - started;
    await page.waitForTimeout(500);  // let the overlays and the thumbnails settle for the screenshot
    outcome = { ok: true, elapsed_ms: elapsed, canvas: await page.evaluate(canvasStats),
                location: page.url() };
  } catch (error) {
    outcome = { ok: false, error: String(error) };
  } finally {
    if (page) {
      await page.screenshot({ path: screenshot }).catch(() => {});
      outcome.text = await page.evaluate(() => document.body.innerText).catch(() => '');
    }
    outcome.requests = requests;
    outcome.strays = strays;
    console.log(JSON.stringify(outcome));
    await browser.close();
  }
  process.exit(outcome.ok ? 0 : 1);
})().catch((error) => { console.error(error); process.exit(1); });
