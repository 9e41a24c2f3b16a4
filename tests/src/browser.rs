//! Pages in a real browser: Debian's headless Chromium, driven over the DevTools
//! protocol (the console's tests, and the live-copy test's look at its card).

use std::sync::Arc;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// Starts Chromium, headless.
pub fn browser() -> anyhow::Result<Browser> {
    let path = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    let options = LaunchOptions::default_builder()
        .path(Some(path.ok_or_else(|| {
            anyhow::anyhow!("chromium is missing: run scripts/setup-tools.sh")
        })?))
        .headless(true)
        // Tests may run as root, where Chromium's sandbox cannot start.
        .sandbox(false)
        .window_size(Some((1400, 1000)))
        .idle_browser_timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Browser::new(options).map_err(|e| anyhow::anyhow!("cannot start chromium: {e}"))
}

/// Keeps a screenshot of the page as target/screenshots/console/<name>.png.
pub fn screenshot(tab: &Tab, name: &str) -> anyhow::Result<()> {
    let dir = crate::target_dir()
        .join("..")
        .join("screenshots")
        .join("console");
    std::fs::create_dir_all(&dir)?;
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(dir.join(format!("{name}.png")), png)?;
    Ok(())
}

/// The text of the page's body as a person sees it.
pub fn text(tab: &Tab) -> anyhow::Result<String> {
    let v = tab
        .evaluate("document.body.innerText", false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(v.value
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default())
}

/// Waits until the page's text satisfies `ok` (live parts refresh every 2 s).
pub fn wait_for_text(tab: &Tab, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = text(tab)?;
        if ok(&t) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            anyhow::bail!("the page never showed {what}; it shows:\n{t}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn open(tab: &Arc<Tab>, url: &str) -> anyhow::Result<()> {
    tab.navigate_to(url)
        .and_then(|t| t.wait_until_navigated())
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    Ok(())
}
