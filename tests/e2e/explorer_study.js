// Signs in to Orthanc Explorer as an administrator, opens a study's page and reads the ehr-imaging
// block. Usage: node explorer_study.js BASE_URL USER PASSWORD ORTHANC_STUDY_ID SCREENSHOT.png
// Prints the block's text as JSON on stdout; exits 1 on failure.
const { chromium } = require('playwright-core');

(async () => {
  const [base, username, password, studyId, screenshot] = process.argv.slice(2);
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
    console.log(JSON.stringify({ text: await page.textContent('#ehr-imaging-match') }));
  } finally {
    await browser.close();
  }
})().catch((error) => { console.error(error); process.exit(1); });
