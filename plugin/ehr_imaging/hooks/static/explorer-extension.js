/* ehr-imaging: on a study's page in Orthanc Explorer, show its EHR order (or why it has none),
   let an administrator link it to an order, and open it in the OHIF viewer with a fresh viewer token.
   Calls the plugin's API with the admin session cookie. */
(function () {
  var API = '../api/v1/dicom';

  function text(value) { return $('<div>').text(value == null ? '' : String(value)).html(); }

  function render(block, match) {
    var html = '<li data-role="list-divider">EHR order (ehr-imaging)</li>';
    if (match.status === 'linked') {
      var o = match.order || {};
      html += '<li>Linked to order <b>' + text(match.order_id) + '</b> (' + text(match.match_rule) + ')<br>'
        + 'Accession ' + text(o.accession_number) + ', MRN ' + text(o.mrn) + ', ' + text(o.modality) + ', '
        + text(o.description) + '</li>';
    } else {
      html += '<li><b>' + (match.status === 'unknown' ? 'not processed yet' : 'unmatched') + '</b>'
        + (match.reason ? ': ' + text(match.reason) : '')
        + (match.candidate_order_ids && match.candidate_order_ids.length
           ? '<br>Candidates: ' + match.candidate_order_ids.map(text).join(', ') : '')
        + '<br><input type="text" id="ehr-imaging-order-id" placeholder="order id">'
        + '<button id="ehr-imaging-link">Link to order</button></li>';
    }
    html += '<li><button id="ehr-imaging-open-viewer">Open in viewer</button></li>';
    block.html(html);
    if (block.listview) { try { block.listview().listview('refresh'); } catch (e) { /* jQuery Mobile absent */ } }
    $('#ehr-imaging-open-viewer').click(function () { openViewer(match.study_instance_uid); });
    $('#ehr-imaging-link').click(function () {
      $.ajax({
        url: API + '/studies/' + encodeURIComponent(match.study_instance_uid) + '/link',
        type: 'POST', contentType: 'application/json',
        data: JSON.stringify({ order_id: $('#ehr-imaging-order-id').val() }),
        success: function () { load(block, match.study_instance_uid); },
        error: function (xhr) { alert('Link refused: ' + ((xhr.responseJSON || {}).detail || xhr.status)); }
      });
    });
  }

  function openViewer(studyUid) {
    // Open the window during the click (popup blockers), then send it to the URL the plugin mints.
    var viewer = window.open('', '_blank');
    if (viewer) { viewer.opener = null; }
    $.getJSON(API + '/viewer-url/' + encodeURIComponent(studyUid), function (answer) {
      if (viewer) { viewer.location = answer.url; } else { window.location = answer.url; }
    }).fail(function (xhr) {
      if (viewer) { viewer.close(); }
      alert('No viewer URL: ' + ((xhr.responseJSON || {}).detail || xhr.status));
    });
  }

  function load(block, studyUid) {
    $.getJSON(API + '/studies/' + encodeURIComponent(studyUid) + '/match', function (match) {
      render(block, match);
    });
  }

  $('#study').live('pagebeforeshow', function () {
    var studyId = $.mobile.pageData && $.mobile.pageData.uuid;
    $('#ehr-imaging-match').remove();
    if (!studyId) { return; }
    var block = $('<ul data-role="listview" data-inset="true" id="ehr-imaging-match"></ul>');
    block.insertAfter($('#study-info'));
    $.getJSON('../studies/' + studyId, function (study) {
      load(block, study.MainDicomTags.StudyInstanceUID);
    });
  });
})();
