// rbee queen dashboard: the entry module. Routes by the URL hash (#/ the dashboard,
// #/jobs/<id> a job page) so the server serves one page and links stay shareable.

import { watchConnection } from "./api.js";
import { byId } from "./dom.js";
import { closeJob, setupJobPage, showJob } from "./job.js";
import { startOverview } from "./overview.js";

const JOB_ROUTE = /^#\/jobs\/([^/]+)$/;

function route() {
  const match = JOB_ROUTE.exec(location.hash);
  byId("overview-view").hidden = Boolean(match);
  byId("job-view").hidden = !match;
  if (match) {
    showJob(decodeURIComponent(match[1]));
  } else {
    closeJob();
  }
}

watchConnection((ok, why) => {
  const conn = byId("conn");
  conn.textContent = ok ? "connected" : why;
  conn.classList.toggle("down", !ok);
});
setupJobPage();
window.addEventListener("hashchange", route);
route();
startOverview();
