/* Fills an empty timezone field with the device's timezone (Intl API). No network use, no
   storage, nothing sent anywhere: the field stays editable, and the form works without it. */
(function () {
  "use strict";
  function fill() {
    var zone;
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {
      return;
    }
    if (!zone) {
      return;
    }
    var fields = document.querySelectorAll("input[data-tidings-timezone]");
    for (var i = 0; i < fields.length; i++) {
      if (!fields[i].value) {
        fields[i].value = zone;
      }
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", fill);
  } else {
    fill();
  }
})();
