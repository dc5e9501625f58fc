"""hearth's web page in a real browser: Debian's Chromium, headless, driven
by Selenium through chromedriver, against a live server with an API key.

Run by tests/web.rs: HEARTH_URL is the server, HEARTH_API_KEY its key;
with HEARTH_SCREENSHOTS set, the main views are saved there as PNGs.
"""

import os
import tempfile
import time
import unittest

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["HEARTH_URL"]
KEY = os.environ["HEARTH_API_KEY"]
SHOTS = os.environ.get("HEARTH_SCREENSHOTS")


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                 "--user-data-dir=" + tempfile.mkdtemp()]:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


class Page(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = browser()
        cls.wait = WebDriverWait(cls.d, 60)

    @classmethod
    def tearDownClass(cls):
        cls.d.quit()

    def shot(self, name):
        if SHOTS:
            self.d.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def by(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def enter_key(self, key):
        dialog = self.wait.until(EC.visibility_of_element_located((By.ID, "key-dialog")))
        field = dialog.find_element(By.ID, "key")
        field.clear()
        field.send_keys(key, Keys.ENTER)

    def test_1_a_wrong_key_shows_the_error_and_the_right_one_works(self):
        self.d.get(URL + "/")
        self.enter_key("wrong-key")
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "key-why"), "invalid API key"))
        self.enter_key(KEY)
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "health"), "ready"))

    def ask(self, question, pipeline, max_tokens=48):
        Select(self.by("#pipeline")).select_by_value(pipeline)
        mt = self.by("#max-tokens")
        mt.clear()
        mt.send_keys(str(max_tokens))
        q = self.by("#question")
        q.clear()
        q.send_keys(question)
        self.by("#send").click()

    def upload(self, name, text):
        path = os.path.join(tempfile.mkdtemp(), name)
        with open(path, "w") as f:
            f.write(text)
        self.by("#tab-docs").click()
        self.by("#files").send_keys(path)
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "uploads"), name + ": stored as"))

    def test_2_rag_answer_streams_with_its_sources(self):
        self.upload("zorblax.md", "# Mount Zorblax\n\nMount Zorblax is a dormant volcano on the island of Quillon. It last erupted in the year 1723.")
        self.by("#tab-chat").click()
        self.ask("When did Mount Zorblax last erupt?", "rag")
        card = self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".answer[data-pipeline=rag]")))
        self.wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".meta").text.startswith("TTFT"))
        self.assertTrue(card.find_element(By.CSS_SELECTOR, ".text").text.strip())
        sources = card.find_elements(By.CSS_SELECTOR, "details.source")
        self.assertTrue(sources)
        summary = sources[0].find_element(By.TAG_NAME, "summary")
        self.assertIn("zorblax", summary.text)
        # The citation names the section (the Markdown heading).
        self.assertIn("Mount Zorblax", summary.text)
        summary.click()
        self.assertIn("1723", sources[0].find_element(By.CSS_SELECTOR, ".passage").text)
        self.shot("page-chat")
        # Clicking a source opens the document.
        sources[0].find_element(By.CSS_SELECTOR, ".open-doc").click()
        self.wait.until(EC.visibility_of_element_located((By.ID, "doc-dialog")))
        self.assertIn("Quillon", self.by("#doc-text").text)
        # Opened at the passage: it is marked.
        self.assertIn("1723", self.by("#doc-text mark").text)
        # The collection picker lists the store's collections.
        self.assertIn("default", self.by("#collection").text)
        self.by("#doc-dialog button").click()

    def test_3_both_pipelines_side_by_side(self):
        self.by("#tab-chat").click()
        self.ask("What is a volcano?", "both", max_tokens=16)
        for p in ["rag", "fine-tuned"]:
            card = self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".turn .answer[data-pipeline=" + p + "]")))
            self.wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".meta").text.startswith("TTFT"))

    def test_4_documents_upload_search_ask_delete(self):
        self.upload("lumenbread.txt", "To bake lumenbread, mix two cups of starlight flour with one cup of river water and bake it for forty minutes.")
        row = self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#doc-rows tr[data-id=lumenbread]")))
        self.shot("page-documents")
        search = self.by("#search")
        search.clear()
        search.send_keys("starlight flour", Keys.ENTER)
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "search-results"), "lumenbread"))
        self.by("#tab-chat").click()
        self.ask("How long do I bake lumenbread?", "rag", max_tokens=16)
        card = self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".turn .answer[data-pipeline=rag]")))
        self.wait.until(lambda d: "lumenbread" in card.text and card.find_element(By.CSS_SELECTOR, ".meta").text.startswith("TTFT"))
        self.by("#tab-docs").click()
        # Opening the tab lists the documents again, which can replace a row
        # between finding it and clicking it: find and click in one step,
        # again if the row was replaced.
        def delete(driver):
            try:
                driver.find_element(By.CSS_SELECTOR, "#doc-rows tr[data-id=lumenbread] button.delete").click()
                return True
            except (NoSuchElementException, StaleElementReferenceException):
                return False
        self.wait.until(delete)
        self.wait.until(EC.invisibility_of_element_located((By.CSS_SELECTOR, "#doc-rows tr[data-id=lumenbread]")))
        # An error is shown as the API words it.
        self.by("#paste-text").send_keys("   ")
        self.by("#paste-form button").click()
        self.wait.until(EC.text_to_be_present_in_element((By.ID, "docs-error"), "the document text is empty"))

    def test_5_stop_cancels_a_generation(self):
        self.by("#tab-chat").click()
        self.ask("Write a very long story about a dragon.", "fine-tuned", max_tokens=1500)
        card = self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".turn .answer[data-pipeline=fine-tuned]")))
        self.wait.until(lambda d: len(card.find_element(By.CSS_SELECTOR, ".text").text) > 20)
        self.by("#stop").click()
        self.wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".meta").text.startswith("stopped after"))
        # The server let it go: nothing keeps running.
        self.by("#tab-status").click()
        def idle(d):
            queues = [l for l in d.find_element(By.ID, "models").text.split("\n") if l.startswith("Queue")]
            return queues and all(": 0 running" in l for l in queues)
        self.wait.until(idle)
        self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#proc-rows tr")))
        self.shot("page-status")

    def test_6_keyboard_reaches_the_tabs(self):
        tab = self.by("#tab-chat")
        tab.click()
        tab.send_keys(Keys.ARROW_RIGHT)
        self.assertEqual(self.d.switch_to.active_element.get_attribute("id"), "tab-docs")
        self.assertFalse(self.by("#view-docs").get_attribute("hidden"))

    def test_7_a_narrow_window_does_not_scroll_sideways(self):
        self.d.set_window_size(400, 800)
        try:
            for tab in ["chat", "docs", "status"]:
                self.by("#tab-" + tab).click()
                time.sleep(0.3)
                wide = self.d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                self.assertLessEqual(wide, 0, tab + " scrolls sideways at 400 px")
        finally:
            self.d.set_window_size(1280, 900)


if __name__ == "__main__":
    unittest.main(verbosity=2)
