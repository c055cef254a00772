// Opens an OHIF viewer URL in Debian's headless Chromium and waits for one outcome:
//   render       a cornerstone viewport canvas shows an image (non-blank pixels);
//   unavailable  OHIF says the studies are not available.
// Usage: node ohif_viewer.js VIEWER_URL SCREENSHOT.png render|unavailable [PROFILE_DIR]
// Prints one JSON line on stdout: elapsed_ms (navigation start -> outcome), the canvas statistics, the
// page text, every DICOMweb/WADO request the page made (status, Authorization sent or not), the "strays"
// (viewer files that failed, same-origin requests outside /ohif/ and DICOMweb) and "resources" (the page's
// resource timing up to the outcome: entries, bytes over the wire, decoded bytes). Exit 1 on failure (the
// screenshot is taken either way). Without PROFILE_DIR the browser starts with no cache (cold); with one,
// its HTTP and code caches persist there between runs (benchmarks/viewer_cold.py: warm). OHIF_ACCEPT_ENCODING
// in the environment replaces the browser's Accept-Encoding (the benchmark's "identity": the files as they are);
// OHIF_THROTTLE_MBPS limits the page's downloads to that many Mbit/s with 5 ms latency (DevTools' emulation).
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

// In the page: what was fetched so far (the document and its resources). transferSize is 0 for a cache hit.
function resourceStats() {
  const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
  const sum = (key) => entries.reduce((total, e) => total + (e[key] || 0), 0);
  const site = entries.filter((e) => new URL(e.name).pathname.startsWith('/ohif/'));
  const dicomweb = entries.filter((e) => !new URL(e.name).pathname.startsWith('/ohif/'));
  return { entries: entries.length, network: entries.filter((e) => e.transferSize > 0).length,
           transfer_bytes: sum('transferSize'), decoded_bytes: sum('decodedBodySize'),
           // ms after navigation: the viewer's last file received; its first request for the study
           site_done_ms: Math.round(Math.max(0, ...site.map((e) => e.responseEnd))),
           first_dicomweb_ms: Math.round(Math.min(...dicomweb.map((e) => e.startTime), 1e9)),
           site_fetch_ms: Math.round(site.reduce((total, e) => total + (e.responseEnd - e.requestStart), 0)) };
}

(async () => {
  const [url, screenshot, mode, profile] = process.argv.slice(2);
  const options = {
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--enable-unsafe-swiftshader'],
  };
  const viewport = { width: 1280, height: 900 };
  // A persistent context is its own browser: closing it closes the browser.
  const browser = profile ? await chromium.launchPersistentContext(profile, { ...options, viewport })
                          : await chromium.launch(options);
  const requests = [];
  // Orthanc's DICOMweb and WADO-URI, and the plugin's scoped QIDO root the viewer queries.
  const isDicomweb = (path) => ['/dicom-web', '/ehr-imaging/dicom-web', '/wado'].some((p) => path.startsWith(p));
  const strays = [];  // the viewer's own files that failed, or same-origin requests outside /ohif/
  let outcome = { ok: false };
  let page;
  try {
    const context = profile ? browser : await browser.newContext({ viewport });
    if (process.env.OHIF_ACCEPT_ENCODING) {
      await context.setExtraHTTPHeaders({ 'Accept-Encoding': process.env.OHIF_ACCEPT_ENCODING });
    }
    await context.addInitScript(() => performance.setResourceTimingBufferSize(100000));
    page = await context.newPage();
    if (process.env.OHIF_THROTTLE_MBPS) {
      const bytesPerSecond = (Number(process.env.OHIF_THROTTLE_MBPS) * 1e6) / 8;
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', {
        offline: false, latency: 5, downloadThroughput: bytesPerSecond, uploadThroughput: bytesPerSecond });
    }
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
    let rendered = null;
    if (mode === 'render') {
      // The canvas as it was when the image first showed: read again later, a WebGL canvas between two
      // redraws can read back blank (a fresh-clone run saw the image on the screenshot and 0 lit pixels).
      const shown = await page.waitForFunction(
        `(() => { const s = (${canvasStats.toString()})(); return s.nonblank > 0.01 ? s : false; })()`, null,
        { timeout: TIMEOUT_MS, polling: 100 });
      rendered = await shown.jsonValue();
    } else if (mode === 'unavailable') {
      await page.waitForFunction(() => /not available/i.test(document.body.innerText), null,
                                 { timeout: TIMEOUT_MS, polling: 100 });
    } else {
      throw new Error(`unknown mode ${mode}`);
    }
    const elapsed = Date.now() - started;
    const resources = await page.evaluate(resourceStats);
    await page.waitForTimeout(500);  // let the overlays and the thumbnails settle for the screenshot
    outcome = { ok: true, elapsed_ms: elapsed, canvas: rendered || await page.evaluate(canvasStats),
                location: page.url(), resources };
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
