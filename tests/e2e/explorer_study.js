// Signs in to Orthanc Explorer as an administrator, opens a study's page and reads the ehr-imaging
// block. Usage: node explorer_study.js BASE_URL USER PASSWORD ORTHANC_STUDY_ID SCREENSHOT.png [open-viewer]
// Prints the block's text (and, with open-viewer, the URL the "Open in viewer" button opened) as JSON on
// stdout; exits 1 on failure.
const { chromium } = require('playwright-core');

(async () => {
  const [base, username, password, studyId, screenshot, mode] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ httpCredentials: { username, password },
                                               viewport: { width: 1100, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${base}/api/v1/dicom/admin/login`);  // 401 challenge -> credentials -> cookie -> Explorer
    await page.goto(`${base}/app/explorer.html#study?uuid=${studyId}`);
    await page.waitForSelector('#ehr-imaging-match li:nth-child(2)', { timeout: 20000 });
    await page.screenshot({ path: screenshot, fullPage: true });
    const result = { text: await page.textContent('#ehr-imaging-match') };
    if (mode === 'open-viewer') {
      // The first request for the viewer page carries the URL as opened (OHIF strips the token later).
      const opened = new Promise((resolve) => context.on('request', (request) => {
        if (request.url().includes('/ohif/viewer')) { resolve(request.url()); }
      }));
      await page.click('#ehr-imaging-open-viewer');
      result.viewerUrl = await Promise.race([opened, new Promise((_, reject) =>
        setTimeout(() => reject(new Error('the viewer was not opened')), 20000))]);
    }
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((error) => { console.error(error); process.exit(1); });
